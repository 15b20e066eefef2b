// libgomp: barriers of a 2-thread team, from the main thread and from a second OS thread
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/resource.h>
#include <time.h>
#define N 20000
static long nvcsw(void) { struct rusage r; getrusage(RUSAGE_SELF, &r); return r.ru_nvcsw; }
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static void phase(const char * name) {
    long c0 = nvcsw(); double t0 = now();
    #pragma omp parallel num_threads(2)
    { for (int i = 0; i < N; i++) {
        #pragma omp barrier
    } }
    printf("%-40s %6.2f voluntary switches per barrier, %6.2f us per barrier\n", name,
           (double)(nvcsw() - c0) / N, (now() - t0) / N * 1e6);
}
static void * other(void * a) { phase((const char *) a); return NULL; }
int main(void) {
    phase("main thread (managed 2)");
    pthread_t t; pthread_create(&t, NULL, other, "second thread, main's team alive (3)"); pthread_join(t, NULL);
    phase("main thread after it (exited: 2)");
    pthread_create(&t, NULL, other, "second thread again (3)");
    pthread_join(t, NULL);
    return 0;
}
