/* Prints the file that defines the malloc this process uses, so the harness
 * can confirm that LD_PRELOAD really took effect (the dynamic loader only
 * warns when a preload fails). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    void *p = malloc(100);
    Dl_info info;
    void *sym = dlsym(RTLD_DEFAULT, "malloc");
    if (!p || !sym || !dladdr(sym, &info) || !info.dli_fname)
        return 1;
    printf("%s\n", info.dli_fname);
    free(p);
    return 0;
}
