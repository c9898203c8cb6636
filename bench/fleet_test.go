//go:build linux

package bench

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	bsm "github.com/bsm/redislock"
	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sys/unix"

	"github.com/ad5dec64/instancelock/internal/proctest"
	"github.com/ad5dec64/instancelock/internal/testserver"
	"github.com/ad5dec64/instancelock/pglock"
	"github.com/ad5dec64/instancelock/redislock"
)

// The fleet benchmarks compare, in one run against the same throwaway
// PostgreSQL 15 and Redis 7 on loopback (internal/testserver starts them
// on first use, as for the lock modules' tests), how fast a waiting process gets a fleet lock:
//
//	pglock         pglock.Locker.Lock: blocks in pg_advisory_lock
//	pg-poll        pg_try_advisory_lock polled on one connection 25 ms apart
//	               doubling to 250 ms with jitter: how pglock waited before
//	redislock      redislock.Locker.Lock: release message + fallback poll
//	bsm-redislock  github.com/bsm/redislock Obtain with LinearBackoff(100ms),
//	               the retry its README shows (its default is no retry)
//	redsync        github.com/go-redsync/redsync/v4 Mutex.LockContext with
//	               its defaults (32 tries, 50-250 ms apart)
//
// Without the servers the benchmarks skip with the reason, unless CI=true.

func init() { helpers["fleet-holder"] = fleetHolder }

const (
	fleetPGEnv    = "BENCH_FLEET_PG"
	fleetRedisEnv = "BENCH_FLEET_REDIS"
	fleetNameEnv  = "BENCH_FLEET_NAME"
	fleetTTLEnv   = "BENCH_FLEET_TTL"
)

var fleetImpls = []string{"pglock", "pg-poll", "redislock", "bsm-redislock", "redsync"}

// fleetTTL is the lease of the Redis locks in the takeover benchmark: a
// killed holder's key lives that long.
const fleetTTL = time.Second

// fleetLock is one implementation's handle on the lock.
type fleetLock interface {
	lock(ctx context.Context) error // waits until held or ctx ends
	unlock() error
	close()
}

func newFleetLock(impl, pgURL, redisURL, name string, ttl time.Duration) (fleetLock, error) {
	switch impl {
	case "pglock":
		l, err := pglock.New(pgURL, name)
		if err != nil {
			return nil, err
		}
		return pgLocker{l}, nil
	case "pg-poll":
		return &pgPoll{url: pgURL, key: pglock.Key(name)}, nil
	case "redislock":
		l, err := redislock.Open(redisURL, name)
		if err != nil {
			return nil, err
		}
		l.TTL = ttl
		return redisLocker{l}, nil
	case "bsm-redislock", "redsync":
		o, err := redis.ParseURL(redisURL)
		if err != nil {
			return nil, err
		}
		c := redis.NewClient(o)
		if impl == "bsm-redislock" {
			return &bsmLock{c: c, l: bsm.New(c), name: name, ttl: ttl}, nil
		}
		m := redsync.New(goredis.NewPool(c)).NewMutex(name, redsync.WithExpiry(ttl))
		return &redsyncLock{c: c, m: m}, nil
	}
	return nil, fmt.Errorf("unknown fleet lock %q", impl)
}

type pgLocker struct{ *pglock.Locker }

func (l pgLocker) lock(ctx context.Context) error { return l.Lock(ctx) }
func (l pgLocker) unlock() error                  { return l.Unlock() }
func (l pgLocker) close()                         { l.Unlock() }

type redisLocker struct{ *redislock.Locker }

func (l redisLocker) lock(ctx context.Context) error { return l.Lock(ctx) }
func (l redisLocker) unlock() error                  { return l.Unlock() }
func (l redisLocker) close()                         { l.Close() }

// pgPoll is pglock's former wait: pg_try_advisory_lock on one connection,
// 25 ms apart doubling to 250 ms, each wait w drawn from [w/2, 3w/2).
type pgPoll struct {
	url string
	key int64
	c   *pgx.Conn
}

func (p *pgPoll) lock(ctx context.Context) error {
	c, err := pgx.Connect(ctx, p.url)
	if err != nil {
		return err
	}
	for wait := 25 * time.Millisecond; ; wait = min(2*wait, 250*time.Millisecond) {
		var got bool
		if err := c.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", p.key).Scan(&got); err != nil {
			c.Close(context.Background())
			return err
		}
		if got {
			p.c = c
			return nil
		}
		select {
		case <-ctx.Done():
			c.Close(context.Background())
			return ctx.Err()
		case <-time.After(wait/2 + rand.N(wait)):
		}
	}
}

func (p *pgPoll) unlock() error {
	if p.c == nil {
		return nil
	}
	_, err := p.c.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", p.key)
	p.c.Close(context.Background())
	p.c = nil
	return err
}

func (p *pgPoll) close() { p.unlock() }

type bsmLock struct {
	c    *redis.Client
	l    *bsm.Client
	name string
	ttl  time.Duration
	held *bsm.Lock
}

func (b *bsmLock) lock(ctx context.Context) error {
	l, err := b.l.Obtain(ctx, b.name, b.ttl, &bsm.Options{RetryStrategy: bsm.LinearBackoff(100 * time.Millisecond)})
	if err != nil {
		return err
	}
	b.held = l
	return nil
}

func (b *bsmLock) unlock() error {
	if b.held == nil {
		return nil
	}
	err := b.held.Release(context.Background())
	b.held = nil
	return err
}

func (b *bsmLock) close() { b.unlock(); b.c.Close() }

type redsyncLock struct {
	c    *redis.Client
	m    *redsync.Mutex
	held bool
}

func (r *redsyncLock) lock(ctx context.Context) error {
	if err := r.m.LockContext(ctx); err != nil {
		return err
	}
	r.held = true
	return nil
}

func (r *redsyncLock) unlock() error {
	if !r.held {
		return nil
	}
	r.held = false
	_, err := r.m.UnlockContext(context.Background())
	return err
}

func (r *redsyncLock) close() { r.unlock(); r.c.Close() }

// monotonic is CLOCK_MONOTONIC in nanoseconds, one clock for the benchmark
// and its helper processes.
func monotonic() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// fleetHolder takes the fleet lock with $BENCH_IMPL, prints "locked" and
// waits for a line on stdin: on "release" it reads the clock, releases and
// prints "released <clock>"; it is SIGKILLed before that in the takeover
// case.
func fleetHolder() {
	ttl, _ := time.ParseDuration(os.Getenv(fleetTTLEnv))
	l, err := newFleetLock(os.Getenv(implEnv), os.Getenv(fleetPGEnv), os.Getenv(fleetRedisEnv), os.Getenv(fleetNameEnv), ttl)
	if err != nil {
		helperFail("%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.lock(ctx); err != nil {
		helperFail("lock: %v", err)
	}
	fmt.Println("locked")
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "release" {
		return
	}
	at := monotonic()
	if err := l.unlock(); err != nil {
		helperFail("unlock: %v", err)
	}
	fmt.Printf("released %d\n", at)
}

// BenchmarkFleetHandover measures, for each implementation, the time from
// the holder process's clock reading just before it releases the lock to
// a waiting Lock in the benchmark process holding it. The waiter waits a
// random 200-300 ms first, so that pollers are in their steady backoff.
// Metrics: median and 95th percentile in µs.
func BenchmarkFleetHandover(b *testing.B) { benchFleet(b, false) }

// BenchmarkFleetTakeover measures the time from SIGKILL of the holder
// process to the waiter holding the lock. The Redis locks are bounded by
// their TTL (1 s here): p50-ttl% is the median as a percentage of it.
func BenchmarkFleetTakeover(b *testing.B) { benchFleet(b, true) }

func benchFleet(b *testing.B, kill bool) {
	pgURL, redisURL := fleetServers(b)
	for _, impl := range fleetImpls {
		b.Run("impl="+impl, func(b *testing.B) {
			ttl := 10 * time.Second
			if kill {
				ttl = fleetTTL
			}
			name := fmt.Sprintf("bench-%s-%d", impl, time.Now().UnixNano())
			w, err := newFleetLock(impl, pgURL, redisURL, name, ttl)
			if err != nil {
				b.Fatal(err)
			}
			defer w.close()
			var lat []time.Duration
			for b.Loop() {
				d, err := fleetRound(w, impl, pgURL, redisURL, name, ttl, kill)
				if err != nil {
					b.Fatal(err)
				}
				lat = append(lat, d)
			}
			reportLatency(b, lat)
			if kill && strings.Contains(impl, "redis") || kill && impl == "redsync" {
				sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
				b.ReportMetric(100*float64(lat[len(lat)/2])/float64(ttl), "p50-ttl%")
			}
		})
	}
}

// fleetRound runs one round and returns the latency.
func fleetRound(w fleetLock, impl, pgURL, redisURL, name string, ttl time.Duration, kill bool) (time.Duration, error) {
	cmd := helperCmd("fleet-holder", implEnv+"="+impl, fleetPGEnv+"="+pgURL, fleetRedisEnv+"="+redisURL,
		fleetNameEnv+"="+name, fleetTTLEnv+"="+ttl.String())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	lr, err := proctest.ReadLines(cmd)
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() }()
	if _, err := expect(lr, "locked", 30*time.Second); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type result struct {
		at  int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		err := w.lock(ctx)
		got <- result{monotonic(), err}
	}()
	time.Sleep(200*time.Millisecond + rand.N(100*time.Millisecond))
	select {
	case r := <-got:
		return 0, fmt.Errorf("the waiter returned while the lock was held: %v", r.err)
	default:
	}
	var from int64
	if kill {
		from = monotonic()
		if err := cmd.Process.Kill(); err != nil {
			return 0, err
		}
		go cmd.Wait() // reaped: the holder's sockets are closed either way
	} else {
		fmt.Fprintln(stdin, "release")
		l, err := expect(lr, "released ", 30*time.Second)
		if err != nil {
			return 0, err
		}
		if from, err = strconv.ParseInt(strings.TrimPrefix(l, "released "), 10, 64); err != nil {
			return 0, err
		}
	}
	r := <-got
	if r.err != nil {
		return 0, r.err
	}
	if err := w.unlock(); err != nil {
		return 0, err
	}
	return time.Duration(r.at - from), nil
}

// fleetServers returns the URLs of the test process's throwaway
// PostgreSQL and Redis (internal/testserver), started on first use and
// stopped by TestMain. Without them the benchmarks skip with the reason,
// unless CI=true, where they fail.
func fleetServers(b *testing.B) (string, string) {
	b.Helper()
	pg, err := testserver.SharedPostgres()
	testserver.Need(b, err)
	r, err := testserver.SharedRedis()
	testserver.Need(b, err)
	return pg.URL, r.URL()
}
