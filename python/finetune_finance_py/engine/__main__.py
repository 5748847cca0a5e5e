"""`python -m finetune_finance_py.engine JOB.json` (or under torchrun): trains the job and exits.

Exit codes: 0 done, 130 interrupted (checkpoint saved), 2 bad job, 3 bad base model, 4 no usable device
(missing CUDA, QLoRA on CPU), 5 out of memory, 1 anything else. The reason is a JSON `error` event on stdout;
the traceback goes to stderr, which the TypeScript side writes to the run folder's engine.log.
"""
import sys

from .run import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
