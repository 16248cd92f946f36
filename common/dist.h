// dist.h: several processes training one model (data parallel): how they are started, how they
// find each other, how they talk, and how they all stop when one of them fails.
//
// One process per GPU (what NCCL recommends and torchrun does). Three ways to start them:
//
//   ./train_gpt                        one node: the program counts the visible GPUs (or takes
//                                      --nproc N / NPROC) and re-executes itself N times as the
//                                      workers (dist_launch below), then supervises them;
//   torchrun --no-python ... ./train_gpt   every rank gets RANK, LOCAL_RANK, WORLD_SIZE,
//                                      LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT;
//   srun ./train_gpt                   every rank gets SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS
//                                      (and SLURM_NTASKS_PER_NODE); the user sets MASTER_ADDR and
//                                      MASTER_PORT.
//
// Rendezvous and control plane. Rank 0 listens on a TCP port, every other rank connects to
// MASTER_ADDR at that port and says who it is (world size, rank); rank 0 checks that the group
// is complete and consistent. The port is DIST_PORT when set, else MASTER_PORT + 1: under
// torchrun, MASTER_PORT itself belongs to torchrun's own store. The sockets stay open for the
// whole run, as a star around rank 0, and carry
//   - the NCCL unique id (rank 0 -> all) that NCCL needs to build its communicator;
//   - small control messages: rank 0's training clock (so every rank takes the same LR and the
//     same stop decision), the eval sums, parameter checksums (CHECK_SYNC_EVERY);
//   - on the CPU device, the gradient all-reduce itself, so that data parallelism runs end to
//     end on a machine without a GPU (CI).
// Collectives over the star gather to rank 0 in rank order, reduce there, and broadcast the
// result: the summation order is fixed, so every rank gets bit-identical numbers.
//
// Failure. Every socket wait has a deadline (DIST_TIMEOUT seconds). A socket that closes means
// that rank exited or was killed: the survivor stops with a line naming it. Rank 0 sits at the
// center, so its exit reaches everyone. While a GPU waits for NCCL, dist_nccl_sync polls the
// stream, NCCL's asynchronous error state and the sockets; on an error, a dead peer or the
// deadline it aborts the communicator (ncclCommAbort) and exits with NCCL's error text.
//
// Plain C++17 and POSIX sockets; the NCCL part is compiled with -DUSE_NCCL (the Makefile adds it
// when nccl.h is found).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>
// <sys/wait.h> declares an enumerator P_ALL (waitid's idtype_t), and so does config.h (which
// programs show an option): rename glibc's while it is read, we never use it
#define P_ALL DIST_WAITID_P_ALL
#include <sys/wait.h>
#undef P_ALL

#include <algorithm>
#include <string>
#include <vector>

#include "utils.h"
#ifdef USE_NCCL
#include <nccl.h>

#include "cuda_utils.cuh"
#endif

// ----------------------------------------------------------------------------
// who am I: the launcher's environment

struct DistEnv {
    int rank = 0, world_size = 1, local_rank = 0, local_world_size = 1;
    bool launched = false;   // started as one rank of a group (ours, torchrun, srun), even of 1
    const char *how = "";    // "torchrun-style env" or "slurm env", for messages
    std::string addr;        // MASTER_ADDR
    int port = 0;            // the control port: DIST_PORT, else MASTER_PORT + 1
};

// An integer environment variable; `def` when unset, a clear error when it is not a number.
inline long env_long(const char *name, long def) {
    const char *s = getenv(name);
    if (s == nullptr || *s == '\0') return def;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || (*end != '\0' && *end != '(')) fatal_config("%s=%s is not an integer", name, s);
    return v;  // (SLURM_NTASKS_PER_NODE may read "8(x2)": the count comes first)
}

// Reads the torchrun contract (RANK first) or Slurm's (SLURM_PROCID with more than one task).
// Neither: a plain process (launched = false), which may become a launcher itself.
inline DistEnv dist_env_from_environment() {
    DistEnv e;
    if (getenv("RANK") != nullptr) {
        e.how = "torchrun-style env";
        e.rank = (int)env_long("RANK", 0);
        if (getenv("WORLD_SIZE") == nullptr) fatal_config("RANK is set but WORLD_SIZE is not (the torchrun contract sets both)");
        e.world_size = (int)env_long("WORLD_SIZE", 1);
        e.local_rank = (int)env_long("LOCAL_RANK", e.rank);
        e.local_world_size = (int)env_long("LOCAL_WORLD_SIZE", e.world_size);
    } else if (getenv("SLURM_PROCID") != nullptr && env_long("SLURM_NTASKS", 1) > 1) {
        e.how = "slurm env";
        e.rank = (int)env_long("SLURM_PROCID", 0);
        e.world_size = (int)env_long("SLURM_NTASKS", 1);
        e.local_rank = (int)env_long("SLURM_LOCALID", 0);
        e.local_world_size = (int)env_long("SLURM_NTASKS_PER_NODE", env_long("SLURM_TASKS_PER_NODE", e.world_size));
    } else {
        return e;
    }
    e.launched = true;
    if (e.world_size < 1 || e.rank < 0 || e.rank >= e.world_size)
        fatal_config("%s: rank %d is outside a world of %d", e.how, e.rank, e.world_size);
    if (e.local_world_size < 1 || e.local_rank < 0 || e.local_rank >= e.local_world_size)
        fatal_config("%s: local rank %d is outside a node of %d ranks", e.how, e.local_rank, e.local_world_size);
    const char *addr = getenv("MASTER_ADDR");
    e.addr = addr && *addr ? addr : "127.0.0.1";
    long port = env_long("DIST_PORT", 0);
    if (port == 0 && getenv("MASTER_PORT")) port = env_long("MASTER_PORT", 0) + 1;
    if (e.world_size > 1 && (addr == nullptr || port == 0))
        fatal_config("%s: world size %d needs MASTER_ADDR and MASTER_PORT (or DIST_PORT) to find rank 0 "
                     "HINT: export MASTER_ADDR=<rank 0's host> MASTER_PORT=29500", e.how, e.world_size);
    if (e.world_size > 1 && (port < 1 || port > 65535)) fatal_config("control port %ld is not a TCP port (DIST_PORT, or MASTER_PORT + 1)", port);
    e.port = (int)port;
    return e;
}

// ----------------------------------------------------------------------------
// the group: sockets to the other ranks (and the NCCL communicator on the GPU)

struct Dist {
    int rank = 0, world_size = 1, local_rank = 0, local_world_size = 1;
    bool active = false;       // this process is one rank of a group: use the collectives below
    std::vector<int> fds;      // rank 0: fds[r] = socket to rank r (fds[0] = -1); others: fds[0] = socket to rank 0
    double timeout_s = 300;    // DIST_TIMEOUT: the longest any rank waits for another
    std::string where;         // "addr:port", for messages
#ifdef USE_NCCL
    ncclComm_t nccl = nullptr;
#endif
};

// the rank on the other end of socket i
inline int dist_peer(const Dist &d, size_t i) { return d.rank == 0 ? (int)i : 0; }

[[noreturn]] inline void dist_peer_lost(Dist &d, int peer, const char *what) {
    fatal("lost rank %d during %s: its connection closed (it exited or was killed; see its own error above)", peer, what);
}

// Waits until fd is ready for `events` or the deadline (now_seconds() time) passes.
inline void dist_wait_fd(Dist &d, int fd, short events, double deadline, int peer, const char *what) {
    for (;;) {
        double left = deadline - now_seconds();
        if (left <= 0)
            fatal("timed out after %.0fs waiting for rank %d during %s HINT: a rank is stuck or much slower; "
                  "DIST_TIMEOUT raises the limit", d.timeout_s, peer, what);
        struct pollfd p = {fd, events, 0};
        int r = poll(&p, 1, (int)std::min(left * 1000 + 1, 1000.0));
        if (r > 0) return;
        if (r < 0 && errno != EINTR) fatal("poll failed during %s (%s)", what, strerror(errno));
    }
}

inline void dist_send(Dist &d, int fd, const void *buf, size_t n, int peer, const char *what) {
    const char *p = (const char *)buf;
    double deadline = now_seconds() + d.timeout_s;
    while (n > 0) {
        dist_wait_fd(d, fd, POLLOUT, deadline, peer, what);
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (k <= 0) dist_peer_lost(d, peer, what);
        p += k;
        n -= (size_t)k;
    }
}

inline void dist_recv(Dist &d, int fd, void *buf, size_t n, int peer, const char *what) {
    char *p = (char *)buf;
    double deadline = now_seconds() + d.timeout_s;
    while (n > 0) {
        dist_wait_fd(d, fd, POLLIN, deadline, peer, what);
        ssize_t k = recv(fd, p, n, MSG_DONTWAIT);
        if (k < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (k <= 0) dist_peer_lost(d, peer, what);
        p += k;
        n -= (size_t)k;
    }
}

// Non-blocking: fatal if a peer's socket has closed. (Pending data is fine: only EOF means death.)
inline void dist_check_peers(Dist &d, const char *what) {
    for (size_t i = 0; i < d.fds.size(); i++) {
        if (d.fds[i] < 0) continue;
        struct pollfd p = {d.fds[i], POLLIN, 0};
        if (poll(&p, 1, 0) <= 0) continue;
        char c;
        ssize_t k = recv(d.fds[i], &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) dist_peer_lost(d, dist_peer(d, i), what);
    }
}

// ----------------------------------------------------------------------------
// rendezvous

struct DistHello {
    uint32_t magic = 0x50474431;  // "PGD1"
    int32_t world_size = 0, rank = 0;
};

inline void dist_socket_options(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // small control messages go out at once
}

// Builds the group of e.world_size ranks; rank 0 listens, the others connect (retrying until the
// deadline, so the start order does not matter).
inline void dist_init(Dist &d, const DistEnv &e, double timeout_s) {
    d.rank = e.rank, d.world_size = e.world_size, d.local_rank = e.local_rank, d.local_world_size = e.local_world_size;
    d.active = e.launched;
    d.timeout_s = timeout_s;
    d.where = e.addr + ":" + std::to_string(e.port);
    if (!d.active) return;
    snprintf(g_error_prefix, sizeof g_error_prefix, "[rank %d] ", d.rank);
    if (d.world_size == 1) return;  // a group of one: nobody to meet
    const double deadline = now_seconds() + timeout_s;
    if (d.rank == 0) {
        int lfd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in sa = {};
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_ANY);
        sa.sin_port = htons((uint16_t)e.port);
        if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, d.world_size) != 0)
            fatal("cannot listen on port %d (%s) HINT: the control port is DIST_PORT, else MASTER_PORT + 1; pick a free one",
                  e.port, strerror(errno));
        d.fds.assign(d.world_size, -1);
        for (int joined = 1; joined < d.world_size;) {
            struct pollfd p = {lfd, POLLIN, 0};
            double left = deadline - now_seconds();
            if (left <= 0) {
                std::string missing;
                for (int r = 1; r < d.world_size; r++)
                    if (d.fds[r] < 0) missing += (missing.empty() ? "" : ",") + std::to_string(r);
                fatal("only %d of %d ranks connected to port %d within %.0fs (missing ranks: %s) HINT: are they "
                      "started, with MASTER_ADDR=%s reachable from their nodes?", joined, d.world_size, e.port, timeout_s,
                      missing.c_str(), e.addr.c_str());
            }
            if (poll(&p, 1, (int)std::min(left * 1000 + 1, 1000.0)) <= 0) continue;
            int fd = accept(lfd, nullptr, nullptr);
            if (fd < 0) continue;
            dist_socket_options(fd);
            DistHello h;
            DistHello want;
            dist_recv(d, fd, &h, sizeof h, -1, "rendezvous");
            if (h.magic != want.magic) { close(fd); continue; }  // a stray connection: not one of ours
            if (h.world_size != d.world_size)
                fatal("rank %d says the world size is %d, rank 0 has %d (WORLD_SIZE / SLURM_NTASKS differ between ranks)",
                      h.rank, h.world_size, d.world_size);
            if (h.rank < 1 || h.rank >= d.world_size || d.fds[h.rank] >= 0)
                fatal("a second rank %d joined (every rank needs its own RANK / SLURM_PROCID)", h.rank);
            d.fds[h.rank] = fd;
            joined++;
        }
        close(lfd);
        for (int r = 1; r < d.world_size; r++) {  // the group is complete: tell everyone
            DistHello ok;
            ok.world_size = d.world_size;
            dist_send(d, d.fds[r], &ok, sizeof ok, r, "rendezvous");
        }
    } else {
        struct addrinfo hints = {}, *res = nullptr;
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        std::string port = std::to_string(e.port), last_error = "no attempt";
        int fd = -1;
        while (fd < 0) {
            if (now_seconds() > deadline)
                fatal("cannot reach rank 0 at %s within %.0fs (%s) HINT: check MASTER_ADDR and MASTER_PORT (the control "
                      "port is DIST_PORT, else MASTER_PORT + 1) and that rank 0 is running", d.where.c_str(), timeout_s,
                      last_error.c_str());
            int gai = getaddrinfo(e.addr.c_str(), port.c_str(), &hints, &res);
            if (gai != 0) {
                last_error = std::string("cannot resolve MASTER_ADDR: ") + gai_strerror(gai);
            } else {
                // a non-blocking connect, so an address that never answers costs at most the
                // time left (a blocking one waits for the kernel's own ~2-minute timeout)
                fd = socket(AF_INET, SOCK_STREAM, 0);
                fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
                int err = connect(fd, res->ai_addr, res->ai_addrlen) == 0 ? 0 : errno;
                if (err == EINPROGRESS) {
                    struct pollfd p = {fd, POLLOUT, 0};
                    double left = std::max(deadline - now_seconds(), 0.0);
                    socklen_t len = sizeof err;
                    if (poll(&p, 1, (int)(std::min(left, 5.0) * 1000) + 1) <= 0) err = ETIMEDOUT;
                    else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
                }
                if (err != 0) {
                    last_error = strerror(err);
                    close(fd);
                    fd = -1;
                }
                freeaddrinfo(res);
            }
            if (fd < 0) usleep(200 * 1000);
        }
        dist_socket_options(fd);
        d.fds.assign(1, fd);
        DistHello h;
        h.world_size = d.world_size;
        h.rank = d.rank;
        dist_send(d, fd, &h, sizeof h, 0, "rendezvous");
        DistHello ok;
        dist_recv(d, fd, &ok, sizeof ok, 0, "rendezvous");
        if (ok.magic != h.magic || ok.world_size != d.world_size)
            fatal("%s answered but is not rank 0 of this group", d.where.c_str());
    }
}

// ----------------------------------------------------------------------------
// collectives over the sockets (rank-ordered, so bit-identical on every rank)

// Rank 0's `bytes` at buf to every rank.
inline void dist_broadcast(Dist &d, void *buf, size_t bytes, const char *what = "broadcast") {
    if (d.world_size == 1) return;
    if (d.rank == 0)
        for (int r = 1; r < d.world_size; r++) dist_send(d, d.fds[r], buf, bytes, r, what);
    else
        dist_recv(d, d.fds[0], buf, bytes, 0, what);
}

// Every rank's `bytes` at mine, in rank order, into all (world_size * bytes) on every rank.
inline void dist_allgather(Dist &d, const void *mine, size_t bytes, void *all, const char *what = "allgather") {
    memcpy((char *)all + (size_t)d.rank * bytes, mine, bytes);
    if (d.world_size == 1) return;
    if (d.rank == 0)
        for (int r = 1; r < d.world_size; r++) dist_recv(d, d.fds[r], (char *)all + (size_t)r * bytes, bytes, r, what);
    else
        dist_send(d, d.fds[0], mine, bytes, 0, what);
    dist_broadcast(d, all, (size_t)d.world_size * bytes, what);
}

// In place: x[i] <- sum over ranks of x[i], added in rank order ((x0 + x1) + x2) + ... on rank 0,
// then broadcast. Works through n in chunks so the gather buffer stays small.
template <typename T>
inline void dist_allreduce_sum(Dist &d, T *x, size_t n, const char *what = "all-reduce") {
    if (d.world_size == 1) return;
    const size_t CHUNK = 1 << 18;
    std::vector<T> in;
    for (size_t i0 = 0; i0 < n; i0 += CHUNK) {
        size_t k = std::min(CHUNK, n - i0);
        if (d.rank == 0) {
            in.resize(k);
            for (int r = 1; r < d.world_size; r++) {
                dist_recv(d, d.fds[r], in.data(), k * sizeof(T), r, what);
                for (size_t i = 0; i < k; i++) x[i0 + i] += in[i];
            }
        } else {
            dist_send(d, d.fds[0], x + i0, k * sizeof(T), 0, what);
        }
        dist_broadcast(d, x + i0, k * sizeof(T), what);
    }
}

inline void dist_barrier(Dist &d, const char *what = "barrier") {
    char c = 0;
    dist_allreduce_sum(d, &c, 1, what);
}

// Rank 0's value of v, on every rank (clocks, stop decisions).
template <typename T>
inline T dist_from_rank0(Dist &d, T v, const char *what) {
    dist_broadcast(d, &v, sizeof v, what);
    return v;
}

// ----------------------------------------------------------------------------
// NCCL: one communicator over all ranks, with a watchdog on every wait

#ifdef USE_NCCL
[[noreturn]] inline void dist_nccl_fail(Dist &d, const char *what, ncclResult_t r) {
    const char *detail = d.nccl ? ncclGetLastError(d.nccl) : "";
    if (d.nccl) ncclCommAbort(d.nccl);  // frees the GPU from the collective that will never finish
    d.nccl = nullptr;
    fatal("NCCL error during %s: %s%s%s", what, ncclGetErrorString(r), detail && *detail ? ": " : "",
          detail ? detail : "");
}

// The communicator is non-blocking: calls may return ncclInProgress; this waits until the last
// one is done, watching for errors, dead peers and the deadline.
inline void dist_nccl_wait_ready(Dist &d, const char *what) {
    const double deadline = now_seconds() + d.timeout_s;
    for (int spin = 0;; spin++) {
        ncclResult_t st = ncclSuccess;
        ncclResult_t r = ncclCommGetAsyncError(d.nccl, &st);
        if (r != ncclSuccess) dist_nccl_fail(d, what, r);
        if (st == ncclSuccess) return;
        if (st != ncclInProgress) dist_nccl_fail(d, what, st);
        if (spin % 1000 == 0) dist_check_peers(d, what);
        if (now_seconds() > deadline) {
            ncclCommAbort(d.nccl);
            d.nccl = nullptr;
            fatal("NCCL %s did not finish within %.0fs (a rank is stuck or gone) HINT: DIST_TIMEOUT raises the limit", what,
                  d.timeout_s);
        }
        usleep(20);
    }
}

inline void dist_nccl_check(Dist &d, ncclResult_t r, const char *what) {
    if (r == ncclInProgress) dist_nccl_wait_ready(d, what);
    else if (r != ncclSuccess) dist_nccl_fail(d, what, r);
}

// One communicator for the group; the unique id travels from rank 0 over the control sockets.
// NVLink SHARP multicast (NVLS) stays off unless the user asked for it: it reserves a lot of
// memory and is not needed for a model this small.
inline void dist_nccl_init(Dist &d) {
    if (getenv("NCCL_NVLS_ENABLE") == nullptr) setenv("NCCL_NVLS_ENABLE", "0", 1);
    ncclUniqueId id;
    if (d.rank == 0) dist_nccl_check(d, ncclGetUniqueId(&id), "ncclGetUniqueId");
    dist_broadcast(d, &id, sizeof id, "NCCL id exchange");
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclResult_t r = ncclCommInitRankConfig(&d.nccl, d.world_size, id, d.rank, &config);
    if (r != ncclSuccess && r != ncclInProgress) dist_nccl_fail(d, "ncclCommInitRankConfig", r);
    dist_nccl_wait_ready(d, "communicator init");
}

// buf <- the average (op = ncclAvg) or sum over ranks, enqueued on `stream`. (Also at world
// size 1, a copy: RANK=0 WORLD_SIZE=1 runs the whole NCCL path on one GPU.)
inline void dist_nccl_all_reduce(Dist &d, float *buf, size_t n, ncclRedOp_t op, cudaStream_t stream, const char *what) {
    dist_nccl_check(d, ncclAllReduce(buf, buf, n, ncclFloat32, op, d.nccl, stream), what);
}

// cudaStreamSynchronize with a watchdog: NCCL's asynchronous errors, dead peers, the deadline.
inline void dist_nccl_sync(Dist &d, cudaStream_t stream, const char *what) {
    const double deadline = now_seconds() + d.timeout_s;
    for (int spin = 0;; spin++) {
        cudaError_t e = cudaStreamQuery(stream);
        if (e == cudaSuccess) return;
        if (e != cudaErrorNotReady) cudaCheck(e);
        if (d.nccl) {
            ncclResult_t st = ncclSuccess;
            ncclCommGetAsyncError(d.nccl, &st);
            if (st != ncclSuccess && st != ncclInProgress) dist_nccl_fail(d, what, st);
        }
        if (spin % 500 == 0) dist_check_peers(d, what);
        if (now_seconds() > deadline) {
            if (d.nccl) ncclCommAbort(d.nccl);
            d.nccl = nullptr;
            fatal("%s did not finish within %.0fs (a rank is stuck or gone) HINT: DIST_TIMEOUT raises the limit", what,
                  d.timeout_s);
        }
        usleep(20);
    }
}
#endif

// The end of a run: everyone is done with every collective, then the sockets close.
inline void dist_finalize(Dist &d) {
    if (!d.active) return;
    dist_barrier(d, "shutdown");
#ifdef USE_NCCL
    if (d.nccl) {
        dist_nccl_check(d, ncclCommFinalize(d.nccl), "communicator finalize");
        ncclCommDestroy(d.nccl);
        d.nccl = nullptr;
    }
#endif
    for (int fd : d.fds)
        if (fd >= 0) close(fd);
    d.fds.clear();
    d.active = false;
}

// ----------------------------------------------------------------------------
// the one-node launcher: re-executes this program once per rank and supervises the workers

static volatile sig_atomic_t g_launcher_signal = 0;
inline void dist_launcher_on_signal(int sig) { g_launcher_signal = sig; }

// A TCP port that is free right now (the kernel picks it).
inline int dist_free_port() {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
        fatal("launcher: cannot find a free TCP port on 127.0.0.1 (%s)", strerror(errno));
    close(fd);
    return ntohs(sa.sin_port);
}

inline std::string dist_describe_status(int status) {
    char buf[96];
    if (WIFSIGNALED(status))
        snprintf(buf, sizeof buf, "was killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(buf, sizeof buf, "exited with status %d", WEXITSTATUS(status));
    return buf;
}

// Starts nproc workers (this executable, same arguments, RANK/LOCAL_RANK/WORLD_SIZE/... set) and
// waits for them. The first worker to fail gets the others stopped (SIGTERM, then SIGKILL after
// 10 s); SIGINT/SIGTERM/SIGHUP to the launcher are forwarded to every worker. Returns the exit
// status for the launcher: 0, or the first failure's (128 + signal for a killed worker).
inline int dist_launch(int nproc, char **argv) {
    const int port = dist_free_port();
    const pid_t me = getpid();
    struct sigaction sa = {};
    sa.sa_handler = dist_launcher_on_signal;
    sigemptyset(&sa.sa_mask);
    for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaction(s, &sa, nullptr);
    std::vector<pid_t> pids(nproc, -1);
    fflush(stdout);
    fflush(stderr);
    for (int r = 0; r < nproc; r++) {
        pid_t pid = fork();
        if (pid < 0) fatal("launcher: fork failed (%s)", strerror(errno));
        if (pid == 0) {
            // the worker: its own process group (a terminal's Ctrl-C reaches the launcher, which
            // forwards it once), and SIGTERM if the launcher itself dies
            setpgid(0, 0);
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != me) _exit(1);
            char v[32];
            auto put = [&](const char *k, long x) { snprintf(v, sizeof v, "%ld", x); setenv(k, v, 1); };
            put("RANK", r);
            put("LOCAL_RANK", r);
            put("WORLD_SIZE", nproc);
            put("LOCAL_WORLD_SIZE", nproc);
            put("MASTER_PORT", port);
            put("DIST_PORT", port);
            setenv("MASTER_ADDR", "127.0.0.1", 1);
            // the node's cores shared out, unless the user chose (N ranks x all cores each thrash)
            if (getenv("OMP_NUM_THREADS") == nullptr) put("OMP_NUM_THREADS", std::max(1L, sysconf(_SC_NPROCESSORS_ONLN) / nproc));
            execv("/proc/self/exe", argv);
            fprintf(stderr, "error: launcher: cannot re-execute /proc/self/exe for rank %d (%s)\n", r, strerror(errno));
            _exit(127);
        }
        pids[r] = pid;
    }
    fprintf(stderr, "launcher: started %d ranks on this node (control port %d)\n", nproc, port);
    int alive = nproc, result = 0, forwarded = 0;
    double kill_at = 0;  // when the stragglers get SIGKILL (0: not stopping)
    auto signal_all = [&](int sig) {
        for (pid_t p : pids)
            if (p > 0) kill(p, sig);
    };
    while (alive > 0) {
        if (g_launcher_signal != 0) {
            int sig = g_launcher_signal;
            g_launcher_signal = 0;
            fprintf(stderr, "launcher: got signal %d (%s), passing it to the %d running ranks\n", sig, strsignal(sig), alive);
            signal_all(sig);
            if (forwarded++ > 0) signal_all(SIGKILL);  // the second Ctrl-C does not wait
            if (kill_at == 0) kill_at = now_seconds() + 30;
            if (result == 0) result = 128 + sig;
        }
        // reap every worker that has ended since the last look; a rank killed by a signal is the
        // cause, the ranks that then lost it are the effect, so it is reported first
        struct Ended { int rank, status; };
        std::vector<Ended> ended;
        for (int status; ;) {
            pid_t pid = waitpid(-1, &status, WNOHANG);
            if (pid <= 0) break;
            for (int r = 0; r < nproc; r++)
                if (pids[r] == pid) ended.push_back({r, status}), pids[r] = -1, alive--;
        }
        std::stable_sort(ended.begin(), ended.end(), [](const Ended &a, const Ended &b) {
            return WIFSIGNALED(a.status) && !WIFSIGNALED(b.status);
        });
        for (const Ended &e : ended) {
            bool ok = WIFEXITED(e.status) && WEXITSTATUS(e.status) == 0;
            if (!ok && result == 0) {
                result = WIFSIGNALED(e.status) ? 128 + WTERMSIG(e.status) : WEXITSTATUS(e.status);
                fprintf(stderr, "launcher: rank %d %s; stopping the other ranks\n", e.rank, dist_describe_status(e.status).c_str());
                signal_all(SIGTERM);
                kill_at = now_seconds() + 10;
            } else if (!ok) {
                fprintf(stderr, "launcher: rank %d %s\n", e.rank, dist_describe_status(e.status).c_str());
            }
        }
        if (ended.empty()) {
            if (kill_at > 0 && now_seconds() > kill_at) {
                fprintf(stderr, "launcher: %d ranks still running after the grace period: SIGKILL\n", alive);
                signal_all(SIGKILL);
                kill_at = now_seconds() + 1e9;
            }
            usleep(20 * 1000);
        }
    }
    return result;
}
