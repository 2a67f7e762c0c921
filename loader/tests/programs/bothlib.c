/* libdemo.c's object linked into this program, and libdemo.so.1 (the same
 * object) loaded beside it: `scale N` calls this program's lib_scale,
 * `libscale N` the library's. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int lib_scale(int x);

int main(void)
{
    char self[4096], line[256];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 32);
    if (n < 0)
        return 1;
    self[n] = 0;
    strcpy(strrchr(self, '/') + 1, "libdemo.so.1");
    void *h = dlopen(self, RTLD_NOW | RTLD_LOCAL);
    int (*lib)(int) = h ? (int (*)(int))dlsym(h, "lib_scale") : NULL;
    if (!lib) {
        fprintf(stderr, "%s\n", dlerror());
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready %d\n", (int)getpid());
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "scale ", 6) == 0)
            printf("%d\n", lib_scale(atoi(line + 6)));
        else if (strncmp(line, "libscale ", 9) == 0)
            printf("%d\n", lib(atoi(line + 9)));
        else
            printf("?\n");
    }
    return 0;
}
