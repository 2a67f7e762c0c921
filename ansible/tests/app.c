/* A long-running program for the Ansible test (ansible/tests/run.sh): one
 * line every 50 ms with a tick count (its state) and answer(), which the
 * fix changes. */
#include <stdio.h>
#include <unistd.h>

static volatile int base = 1; /* read on every call: the call cannot be hoisted */

__attribute__((noinline)) int answer(void)
{
    return base;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (long tick = 1;; tick++) {
        printf("tick %ld answer %d\n", tick, answer());
        usleep(50000);
    }
}
