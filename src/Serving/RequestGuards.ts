/**
 * What a request must pass before it reaches a handler: a route of the contract (404, 405), the bearer key (401),
 * and without a key the loopback Host (403, DNS rebinding) and a JSON Content-Type on POST (415, cross-site forms).
 */
import { Redacted } from "effect"
import type { HttpServerRequest } from "effect/http"
import { HttpApi } from "effect/http-api"
import { createHash, timingSafeEqual } from "node:crypto"
import * as Api from "../Api/Api.ts"
import { type ApiFailure, failure } from "./ApiFailure.ts"

const digest = (text: string) => createHash("sha256").update(text, "utf8").digest()

/**
 * `Authorization: Bearer <key>` with the scheme in any case (RFC 9110 §11.1). The keys are compared as SHA-256
 * digests with `timingSafeEqual`, so neither the key's length nor its first wrong byte shows in the timing.
 */
export const bearerMatches = (header: string | undefined, key: Redacted.Redacted<string>): boolean => {
  const match = /^\s*bearer\s+(\S+)\s*$/i.exec(header ?? "")
  return timingSafeEqual(digest(match?.[1] ?? ""), digest(Redacted.value(key))) && match !== null
}

const wildcardHosts: ReadonlySet<string> = new Set(["0.0.0.0", "::", "[::]", ""])
const loopbackHosts: ReadonlySet<string> = new Set(["localhost", "127.0.0.1", "::1", "[::1]"])

/** Whether `host` (a bind address) is reachable from this machine only. */
export const isLoopbackHost = (host: string): boolean => loopbackHosts.has(host.toLowerCase()) || /^127\./.test(host)

/** The warning for a server that anyone on the network can use, or undefined. */
export const bindWarning = (host: string, apiKey: Redacted.Redacted<string> | undefined): string | undefined =>
  apiKey !== undefined || isLoopbackHost(host)
    ? undefined
    : `listening on ${host} without an API key: anyone who can reach this address can use the server; set --api-key (or SERVE_API_KEY)`

/** The host name of a Host header: `[::1]:8000` -> `[::1]`, `LocalHost:80` -> `localhost`. */
const hostName = (header: string): string => {
  const h = header.trim().toLowerCase()
  if (h.startsWith("[")) return h.slice(0, h.indexOf("]") + 1)
  const colon = h.indexOf(":")
  return colon < 0 ? h : h.slice(0, colon)
}

/**
 * The Host names a server without an API key answers (DNS rebinding: a page on evil.example that resolves its
 * name to 127.0.0.1 sends `Host: evil.example`): loopback, and the bound address when it is a specific one.
 * Undefined (no check) for a wildcard bind, which `bindWarning` already reports.
 */
const allowedHostsOf = (host: string): ReadonlySet<string> | undefined => {
  const bound = host.toLowerCase()
  if (wildcardHosts.has(bound)) return undefined
  return new Set([...loopbackHosts, bound.includes(":") && !bound.startsWith("[") ? `[${bound}]` : bound])
}

const mediaType = (header: string | undefined) => (header ?? "").split(";")[0]!.trim().toLowerCase()
const isJsonMediaType = (type: string) => type === "application/json" || /^application\/[\w.+-]*\+json$/.test(type)

/** The method + path table of the contract, for 404 and 405 (with the methods a path takes). */
export const routeTable: ReadonlyMap<string, ReadonlyArray<string>> = (() => {
  const table = new Map<string, Array<string>>()
  HttpApi.reflect(Api.ServeApi, {
    onGroup() {},
    onEndpoint({ endpoint }) {
      table.set(endpoint.path, [...(table.get(endpoint.path) ?? []), endpoint.method])
    }
  })
  table.set(Api.paths.openapi, ["GET"])
  return table
})()

/** The 404 of a path the contract does not have. */
export const notFound = (method: string, pathname: string) =>
  failure(404, `no route ${method} ${pathname}`, "invalid_request_error", { code: "not_found" })

/** The guards of a server bound to `host` with or without an API key: what a request fails before its handler, if anything. */
export const makeRefusal = (host: string, apiKey: Redacted.Redacted<string> | undefined) => {
  const allowedHosts = apiKey === undefined ? allowedHostsOf(host) : undefined
  return (request: HttpServerRequest.HttpServerRequest, pathname: string): ApiFailure | undefined => {
    const methods = routeTable.get(pathname)
    if (methods === undefined) return notFound(request.method, pathname)
    if (!methods.includes(request.method) && !(request.method === "HEAD" && methods.includes("GET"))) {
      return failure(405, `${request.method} is not allowed on ${pathname}; use ${methods.join(", ")}`, "invalid_request_error", { code: "method_not_allowed" })
    }
    if (apiKey !== undefined) {
      return Api.openPaths.has(pathname) || bearerMatches(request.headers["authorization"], apiKey)
        ? undefined
        : failure(401, "missing or wrong bearer token", "authentication_error", { code: "invalid_api_key" })
    }
    const hostHeader = request.headers["host"]
    if (allowedHosts !== undefined && hostHeader !== undefined && !allowedHosts.has(hostName(hostHeader))) {
      return failure(403, `Host ${JSON.stringify(hostHeader)} is not served: without an API key this server answers only ${[...allowedHosts].join(", ")} (set --api-key to serve other names)`, "permission_error", { code: "host_not_allowed" })
    }
    if (request.method === "POST" && !isJsonMediaType(mediaType(request.headers["content-type"]))) {
      return failure(415, `a POST body must be sent as application/json (got ${JSON.stringify(request.headers["content-type"] ?? "no Content-Type")})`, "invalid_request_error", { code: "unsupported_media_type" })
    }
    return undefined
  }
}
