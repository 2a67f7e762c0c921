/* Calls into libdemo.so, one command per stdin line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int lib_scale(int x);
int lib_tls(int x);

int main(void)
{
    char line[256];
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready %d\n", (int)getpid());
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "scale ", 6) == 0)
            printf("%d\n", lib_scale(atoi(line + 6)));
        else if (strncmp(line, "tls ", 4) == 0)
            printf("%d\n", lib_tls(atoi(line + 4)));
        else
            printf("?\n");
    }
    return 0;
}
