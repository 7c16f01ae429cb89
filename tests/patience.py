"""How long a test waits for something that normally takes seconds (a model run, a server starting, a child process).

A wait ends as soon as its condition holds, so a long bound costs a passing test nothing; it only decides when a
test gives up. It is therefore a bound for a hang, not a speed claim: a busy machine (several test runs sharing two
cores) was seen to run the tiny model 40 times slower than at rest, and must still pass. Speed is measured in bench/.
"""

HANG_S = 600
HANG_MS = HANG_S * 1000  # for pytest-qt's waitUntil / waitSignal
