// bench/nodelay_shim.c: the experiment behind docs/benchmarks.md "Where the tiny
// pipeline's half second goes": LD_PRELOAD it into `dagml run` to give every
// accepted socket TCP_NODELAY, as a fix in src/cluster would.
//   gcc -shared -fPIC -O2 -o /tmp/nodelay.so bench/nodelay_shim.c -ldl
//   LD_PRELOAD=/tmp/nodelay.so target/release/dagml run bench/tiny_csv.toml -q
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
static void nodelay(int fd) { int one = 1; if (fd >= 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); }
int accept4(int fd, struct sockaddr *a, socklen_t *l, int flags) {
  static int (*real)(int, struct sockaddr *, socklen_t *, int);
  if (!real) real = dlsym(RTLD_NEXT, "accept4");
  int r = real(fd, a, l, flags); nodelay(r); return r;
}
int accept(int fd, struct sockaddr *a, socklen_t *l) {
  static int (*real)(int, struct sockaddr *, socklen_t *);
  if (!real) real = dlsym(RTLD_NEXT, "accept");
  int r = real(fd, a, l); nodelay(r); return r;
}
