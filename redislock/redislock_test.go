//go:build unix

package redislock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/internal/proctest"
	"github.com/ad5dec64/instancelock/internal/testserver"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// open returns a Locker made by Open on the test server, closed at the end
// of the test.
func open(t *testing.T, name string) *Locker {
	t.Helper()
	l, err := Open(srv.URL(), name)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	return l
}

// waitLost waits for l's Lost channel and returns how long it took.
func waitLost(t *testing.T, l *Locker, lost <-chan struct{}, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-lost:
	case <-time.After(within):
		t.Fatalf("the holder was not told of the loss within %v (Err: %v)", within, l.Err())
	}
	return time.Since(start)
}

// keyValue reads the lock key with a plain client.
func keyValue(t *testing.T, c *redis.Client, name string) map[string]any {
	t.Helper()
	s, err := c.Get(context.Background(), name).Result()
	require.NoError(t, err)
	var v map[string]any
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	require.NoError(t, d.Decode(&v), s)
	return v
}

func TestTryLockHolderUnlock(t *testing.T) {
	needServer(t)
	checkNoLeak(t)
	name := t.Name()
	raw := rawClient(t)
	a := open(t, name)
	a.Port, a.TTL = 3000, 2*time.Second
	b := open(t, name)
	host, _ := os.Hostname()

	// Nobody holds it.
	_, err := b.Holder()
	require.ErrorIs(t, err, instancelock.ErrNotRunning)
	require.ErrorIs(t, a.Err(), instancelock.ErrNotHeld)
	require.Nil(t, a.Lost())
	_, ok := a.FencingToken()
	require.False(t, ok)

	require.NoError(t, a.TryLock())
	require.NoError(t, a.Err())
	require.ErrorIs(t, a.TryLock(), instancelock.ErrAlreadyHeld, "a second TryLock of the holder")
	lost := a.Lost()
	require.NotNil(t, lost)
	fa, ok := a.FencingToken()
	require.True(t, ok)

	// The key: the documented JSON, with a TTL.
	v := keyValue(t, raw, name)
	require.Len(t, v["token"], 32)
	require.Equal(t, strconv.FormatUint(fa, 10), v["fence"].(json.Number).String())
	holder, _ := json.Marshal(v["holder"])
	pl, err := instancelock.ParseProcessLock(holder)
	require.NoError(t, err)
	require.Equal(t, os.Getpid(), pl.PID)
	require.Equal(t, 3000, pl.Port)
	require.Equal(t, host, pl.Hostname)
	require.Equal(t, a.InstanceID(), pl.InstanceID)
	pttl := raw.PTTL(context.Background(), name).Val()
	require.True(t, pttl > 0 && pttl <= 2*time.Second, "PTTL %v", pttl)

	// A contender is refused and told who holds the lock.
	err = b.TryLock()
	require.ErrorIs(t, err, instancelock.ErrAlreadyRunning)
	var are *instancelock.AlreadyRunningError
	require.ErrorAs(t, err, &are)
	require.Equal(t, fmt.Sprintf("redis lock %q", name), are.Path)
	require.True(t, pl.Equal(are.Holder), "%v != %v", pl, are.Holder)
	require.Contains(t, are.Reason, "expires in")
	got, err := b.Holder()
	require.NoError(t, err)
	require.True(t, pl.Equal(got))
	require.ErrorIs(t, b.Err(), instancelock.ErrNotHeld)
	require.Nil(t, b.Lost())

	// A second TryLock by the holder is an error, not a contention.
	err = a.TryLock()
	require.Error(t, err)
	require.NotErrorIs(t, err, instancelock.ErrAlreadyRunning)

	// Unlock deletes the key; a second Unlock is a no-op; the old channel is
	// not closed.
	require.NoError(t, a.Unlock())
	require.NoError(t, a.Unlock())
	require.Equal(t, int64(0), raw.Exists(context.Background(), name).Val())
	require.ErrorIs(t, a.Err(), instancelock.ErrNotHeld)
	require.Nil(t, a.Lost())
	select {
	case <-lost:
		t.Fatal("Unlock closed the Lost channel")
	default:
	}
	_, ok = a.FencingToken()
	require.False(t, ok)

	// The next holder gets a greater fencing token; the same Locker can
	// lock again and keeps its instance id.
	require.NoError(t, b.TryLock())
	fb, _ := b.FencingToken()
	require.Greater(t, fb, fa)
	require.NoError(t, b.Unlock())
	id := a.InstanceID()
	require.NoError(t, a.TryLock())
	require.Equal(t, id, a.InstanceID())
	fa2, _ := a.FencingToken()
	require.Greater(t, fa2, fb)
	require.NoError(t, a.Close())
	require.NoError(t, a.Close())
	require.Equal(t, int64(0), raw.Exists(context.Background(), name).Val())
}

// The holder renews the lease: it keeps the lock for many TTLs, and the key
// keeps its value.
func TestRenewalKeepsTheLease(t *testing.T) {
	needServer(t)
	checkNoLeak(t)
	name := t.Name()
	ttl := 200 * time.Millisecond
	raw := rawClient(t)
	a := open(t, name)
	a.TTL = ttl
	b := open(t, name)
	b.TTL = ttl
	require.NoError(t, a.TryLock())
	value := raw.Get(context.Background(), name).Val()
	for i := 0; i < 10; i++ {
		time.Sleep(ttl / 2)
		require.NoError(t, a.Err(), "after %v", time.Duration(i+1)*ttl/2)
		require.ErrorIs(t, b.TryLock(), instancelock.ErrAlreadyRunning)
		require.Equal(t, value, raw.Get(context.Background(), name).Val())
	}
	require.NoError(t, a.Unlock())
}

func TestLockWaitsForTheHolder(t *testing.T) {
	needServer(t)
	checkNoLeak(t)
	name := t.Name()
	a := open(t, name)
	b := open(t, name)
	require.NoError(t, a.TryLock())
	fa, _ := a.FencingToken()

	res := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res <- b.Lock(ctx)
	}()
	select {
	case err := <-res:
		t.Fatalf("Lock returned while the lock was held: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	require.NoError(t, a.Unlock())
	require.NoError(t, <-res)
	fb, ok := b.FencingToken()
	require.True(t, ok)
	require.Greater(t, fb, fa)
	require.NoError(t, b.Unlock())
}

func TestLockHonoursTheContext(t *testing.T) {
	needServer(t)
	checkNoLeak(t)
	name := t.Name()
	a := open(t, name)
	b := open(t, name)
	require.NoError(t, a.TryLock())

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := b.Lock(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, err, instancelock.ErrAlreadyRunning)

	why := errors.New("the host is shutting down")
	ctx2, cancel2 := context.WithCancelCause(context.Background())
	go func() { time.Sleep(100 * time.Millisecond); cancel2(why) }()
	err = b.Lock(ctx2)
	require.ErrorIs(t, err, why)
	require.ErrorIs(t, b.Err(), instancelock.ErrNotHeld)

	// A held Locker's Lock is an error at once.
	err = a.Lock(context.Background())
	require.Error(t, err)
	require.NotErrorIs(t, err, instancelock.ErrAlreadyRunning)
}

// The key is deleted under the holder: Redis lets a second holder in at
// once (a lease cannot prevent it), with a greater fencing token, and the
// first holder is told by its next renewal, within the renewal interval
// (ttl/3), long before its lease would run out.
func TestKeyDeleted(t *testing.T) {
	needServer(t)
	checkNoLeak(t)
	name := t.Name()
	ttl := 3 * time.Second
	raw := rawClient(t)
	a := open(t, name)
	a.TTL = ttl
	b := open(t, name)
	b.TTL = ttl
	require.NoError(t, a.TryLock())
	lost := a.Lost()
	fa, _ := a.FencingToken()

	require.NoError(t, raw.Del(context.Background(), name).Err())
	deleted := time.Now()
	require.NoError(t, b.TryLock())
	fb, _ := b.FencingToken()
	require.Greater(t, fb, fa, "the fencing token tells the new holder from the old")

	waitLost(t, a, lost, 10*time.Second)
	took := time.Since(deleted)
	t.Logf("key deleted: holder told after %v (renewal interval %v, TTL %v)", took, ttl/3, ttl)
	err := a.Err()
	require.ErrorIs(t, err, instancelock.ErrLockLost)
	require.ErrorIs(t, err, ErrKeyChanged, "found by a renewal, not by the local deadline")
	require.NotErrorIs(t, err, ErrLeaseExpired)
	require.Less(t, took, ttl, "told by the renewal, before the lease would have expired")
	require.Contains(t, err.Error(), strconv.Itoa(os.Getpid()), "the error names the new holder: %v", err)
	_, ok := a.FencingToken()
	require.False(t, ok)
	require.Equal(t, lost, a.Lost(), "Lost stays the same closed channel until Unlock")

	// The old holder's Unlock leaves the new holder's key alone; its error
	// stays until the next acquisition.
	require.NoError(t, a.Unlock())
	require.ErrorIs(t, a.Err(), instancelock.ErrLockLost)
	h, err := a.Holder()
	require.NoError(t, err)
	require.Equal(t, b.InstanceID(), h.InstanceID)
	require.NoError(t, b.Err())
}

// The key is overwritten by someone else: the holder is told by its next
// renewal.
func TestKeyOverwritten(t *testing.T) {
	needServer(t)
	checkNoLeak(t)
	name := t.Name()
	raw := rawClient(t)
	a := open(t, name)
	a.TTL = 600 * time.Millisecond
	require.NoError(t, a.TryLock())
	lost := a.Lost()
	require.NoError(t, raw.Set(context.Background(), name, "not a lock", time.Minute).Err())
	waitLost(t, a, lost, 10*time.Second)
	require.ErrorIs(t, a.Err(), ErrKeyChanged)
	require.Contains(t, a.Err().Error(), "another value")

	// Garbage in the key is reported, not crashed on.
	_, err := a.Holder()
	require.ErrorIs(t, err, instancelock.ErrInvalidLock)
	require.NoError(t, a.Unlock())
	err = a.TryLock()
	var are *instancelock.AlreadyRunningError
	require.ErrorAs(t, err, &are)
	require.Zero(t, are.Holder.PID)
	require.Contains(t, are.Reason, "did not write")
	require.Equal(t, "not a lock", raw.Get(context.Background(), name).Val())
}

// The server is killed and restarted at once, empty: the holder's next
// renewal finds the key gone (or its lease runs out first), and the next
// holder's fencing token is still greater, although the counter was lost.
func TestServerRestartedWithoutPersistence(t *testing.T) {
	needServer(t)
	checkNoLeak(t)
	name := t.Name()
	ttl := 2 * time.Second
	a := open(t, name)
	a.TTL = ttl
	b := open(t, name)
	b.TTL = ttl
	require.NoError(t, a.TryLock())
	lost := a.Lost()
	fa, _ := a.FencingToken()

	restarted := time.Now()
	restartServer(t)
	took := time.Since(restarted)
	waitLost(t, a, lost, 15*time.Second)
	t.Logf("restart took %v; holder told %v after it began: %v", took, time.Since(restarted), a.Err())
	require.ErrorIs(t, a.Err(), instancelock.ErrLockLost)

	require.NoError(t, b.TryLock())
	fb, _ := b.FencingToken()
	require.Greater(t, fb, fa, "fencing tokens keep growing across a restart that lost the counter")
	t.Logf("fence before the restart %d, after %d", fa, fb)
	require.NoError(t, a.Unlock())
	require.NoError(t, b.Err(), "the old holder's Unlock left the new key alone")
	require.NoError(t, b.Unlock())
}

// The server is down for longer than the TTL: the holder's lease runs out
// locally and it is told, with the last renewal error; a waiter rides out
// the outage and gets the lock when the server is back.
func TestServerDown(t *testing.T) {
	needServer(t)
	checkNoLeak(t)
	name := t.Name()
	ttl := 500 * time.Millisecond
	a := open(t, name)
	a.TTL = ttl
	b := open(t, name)
	b.TTL = ttl
	require.NoError(t, a.TryLock())
	lost := a.Lost()

	srv.Stop()
	down := time.Now()
	waitLost(t, a, lost, 10*time.Second)
	t.Logf("server down: holder told after %v (TTL %v): %v", time.Since(down), ttl, a.Err())
	require.ErrorIs(t, a.Err(), instancelock.ErrLockLost)
	require.ErrorIs(t, a.Err(), ErrLeaseExpired)

	res := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res <- b.Lock(ctx)
	}()
	time.Sleep(300 * time.Millisecond) // Lock meets the outage
	select {
	case err := <-res:
		t.Fatalf("Lock returned during the outage: %v", err)
	default:
	}
	needServer(t)
	require.NoError(t, <-res)
	require.NoError(t, b.Err())
	require.NoError(t, b.Unlock())
	require.NoError(t, a.Unlock())
}

// The server hangs (SIGSTOP): connections stay open and renewals get no
// answer. The holder is told when its local deadline passes, even with a
// client that does not honour context deadlines and would wait 10 s for a
// reply.
func TestServerHangs(t *testing.T) {
	needServer(t)
	checkNoLeak(t)
	name := t.Name()
	ttl := 500 * time.Millisecond
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second})
	t.Cleanup(func() { c.Close() })
	a, err := New(c, name)
	require.NoError(t, err)
	a.TTL = ttl
	t.Cleanup(func() { a.Close() })
	require.NoError(t, a.TryLock())
	lost := a.Lost()

	srv.Pause()
	paused := time.Now()
	t.Cleanup(srv.Resume)
	waitLost(t, a, lost, 5*time.Second)
	t.Logf("server hung: holder told after %v (TTL %v, client read timeout 10s)", time.Since(paused), ttl)
	require.ErrorIs(t, a.Err(), ErrLeaseExpired)
	srv.Resume()
	require.NoError(t, a.Unlock())
}

// Fencing tokens strictly increase from one holder to the next, across
// Lockers and across a restart of the server that lost the counter.
func TestFencingTokensIncrease(t *testing.T) {
	needServer(t)
	checkNoLeak(t)
	name := t.Name()
	raw := rawClient(t)
	require.NoError(t, raw.Del(context.Background(), name+":fence").Err()) // from an earlier -count
	ls := []*Locker{open(t, name), open(t, name), open(t, name)}
	var last uint64
	for i := 0; i < 30; i++ {
		if i == 20 {
			restartServer(t)
		}
		l := ls[i%len(ls)]
		require.NoError(t, l.TryLock())
		f, ok := l.FencingToken()
		require.True(t, ok)
		require.Greater(t, f, last, "holding %d", i)
		require.Equal(t, strconv.FormatUint(f, 10), raw.Get(context.Background(), name+":fence").Val())
		last = f
		require.NoError(t, l.Unlock())
	}
	// The token is at least the server's time in microseconds.
	now, err := raw.Time(context.Background()).Result()
	require.NoError(t, err)
	require.LessOrEqual(t, uint64(now.Add(-time.Minute).UnixMicro()), last)
	require.LessOrEqual(t, last, uint64(now.UnixMicro()))

	// A counter ahead of the clock keeps counting by one.
	ahead := uint64(now.Add(time.Hour).UnixMicro())
	require.NoError(t, raw.Set(context.Background(), name+":fence", ahead, 0).Err())
	require.NoError(t, ls[0].TryLock())
	f, _ := ls[0].FencingToken()
	require.Equal(t, ahead+1, f)
	require.NoError(t, ls[0].Unlock())
}

// A reply lost on the way back makes the client send the script again; the
// second run finds this Locker's own value, which is a win, not a
// contention.
func TestAcquireReplyLost(t *testing.T) {
	needServer(t)
	checkNoLeak(t)
	name := t.Name()
	p := startProxy(t, srv.Addr())
	l, err := Open("redis://"+p.addr(), name)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	// Load the scripts, so that the next EVALSHA runs at once.
	require.NoError(t, l.TryLock())
	require.NoError(t, l.Unlock())

	p.dropNextReply("EVALSHA")
	require.NoError(t, l.TryLock())
	require.Equal(t, 1, p.dropped())
	f, ok := l.FencingToken()
	require.True(t, ok)
	raw := rawClient(t)
	v := keyValue(t, raw, name)
	require.Equal(t, strconv.FormatUint(f, 10), v["fence"].(json.Number).String())
	require.NoError(t, l.Unlock())

	// Without retries, the attempt fails; the key it may have set is
	// deleted, so that it does not keep the others out for a TTL.
	c := redis.NewClient(&redis.Options{Addr: p.addr(), MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	l2, err := New(c, name)
	require.NoError(t, err)
	l2.TTL = time.Minute
	t.Cleanup(func() { l2.Close() })
	p.dropNextReply("EVALSHA")
	err = l2.TryLock()
	require.Error(t, err)
	require.NotErrorIs(t, err, instancelock.ErrAlreadyRunning)
	require.Equal(t, 2, p.dropped())
	require.Equal(t, int64(0), raw.Exists(context.Background(), name).Val(), "the abandoned holding was deleted")
	require.ErrorIs(t, l2.Err(), instancelock.ErrNotHeld)
}

// The lease runs out while the server does not answer: the holder is told,
// and the renewer stops.
func TestNetworkPartition(t *testing.T) {
	needServer(t)
	checkNoLeak(t)
	name := t.Name()
	ttl := 300 * time.Millisecond
	p := startProxy(t, srv.Addr())
	l, err := Open("redis://"+p.addr(), name)
	require.NoError(t, err)
	l.TTL = ttl
	t.Cleanup(func() { l.Close() })
	require.NoError(t, l.TryLock())
	lost := l.Lost()
	p.blackhole(true)
	start := time.Now()
	waitLost(t, l, lost, 5*time.Second)
	t.Logf("partition: holder told after %v (TTL %v)", time.Since(start), ttl)
	require.ErrorIs(t, l.Err(), ErrLeaseExpired)
	p.blackhole(false)
	require.NoError(t, l.Unlock())
}

func TestNewChecks(t *testing.T) {
	needServer(t)
	checkNoLeak(t)
	c := rawClient(t)
	for _, tc := range []struct {
		name   string
		client redis.UniversalClient
		lock   string
		want   string
	}{
		{"nil client", nil, "x", "nil client"},
		{"empty name", c, "", "empty lock name"},
		{"cluster without hash tag", redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{srv.Addr()}}), "x", "hash tag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.client, tc.lock)
			require.ErrorContains(t, err, tc.want)
		})
	}
	require.True(t, hasHashTag("{x}"))
	require.True(t, hasHashTag("a{x}b"))
	require.False(t, hasHashTag("a{}b"))
	require.False(t, hasHashTag("a{b"))

	_, err := Open("http://nowhere", "x")
	require.Error(t, err)

	// An unreachable server: New and Open talk to no server; TryLock
	// fails with the reason, Lock waits for the server until ctx ends.
	port, err := testserver.FreePort()
	require.NoError(t, err)
	l, err := Open(fmt.Sprintf("redis://127.0.0.1:%d", port), "x")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	require.ErrorContains(t, l.TryLock(), "checking the server's maxmemory-policy")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err = l.Lock(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "checking the server's maxmemory-policy")

	l, err = New(c, "x")
	require.NoError(t, err)
	require.Equal(t, "x", l.Name())
	require.NoError(t, l.Close(), "Close of a New'ed Locker leaves the client open")
	require.NoError(t, c.Ping(context.Background()).Err())
}

// A field out of range is refused by the first TryLock and Lock with an
// error that names it, before the server is asked anything; the error
// stays. Holder, which uses none of them, works.
func TestFieldsOutOfRange(t *testing.T) {
	needServer(t)
	checkNoLeak(t)
	for _, tc := range []struct {
		name string
		set  func(*Locker)
		want string
	}{
		{"short TTL", func(l *Locker) { l.TTL = 10 * time.Millisecond }, "Locker.TTL is 10ms: want at least 50ms, or 0 for 10s"},
		{"negative TTL", func(l *Locker) { l.TTL = -time.Second }, "Locker.TTL is -1s"},
		{"port 70000", func(l *Locker) { l.Port = 70000 }, "Locker.Port is 70000: want 1..65535, or 0 for none"},
		{"port -1", func(l *Locker) { l.Port = -1 }, "Locker.Port is -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := open(t, t.Name())
			tc.set(l)
			require.ErrorContains(t, l.TryLock(), tc.want)
			require.ErrorContains(t, l.Lock(context.Background()), tc.want, "Lock fails at once")
			require.ErrorContains(t, l.TryLock(), tc.want, "the error stays")
			require.ErrorIs(t, l.Err(), instancelock.ErrNotHeld)
			_, err := l.Holder()
			require.ErrorIs(t, err, instancelock.ErrNotRunning)
			require.Equal(t, int64(0), rawClient(t).Exists(context.Background(), t.Name()).Val(), "nothing was written")
		})
	}
}

// The zero Locker fails with how to make one and never panics; zero
// fields are the defaults: a 10 s TTL, no port, silent.
func TestZeroValues(t *testing.T) {
	needServer(t)
	checkNoLeak(t)
	var z Locker
	for _, err := range []error{z.TryLock(), z.Lock(context.Background())} {
		require.ErrorContains(t, err, "use redislock.New(client, name) or redislock.Open(url, name)")
	}
	_, err := z.Holder()
	require.ErrorContains(t, err, "use redislock.New")
	require.ErrorIs(t, z.Err(), instancelock.ErrNotHeld)
	require.Nil(t, z.Lost())
	_, ok := z.FencingToken()
	require.False(t, ok)
	require.NoError(t, z.Unlock())
	require.NoError(t, z.Close())

	name := t.Name()
	l := open(t, name)
	require.NoError(t, l.TryLock())
	pttl := rawClient(t).PTTL(context.Background(), name).Val()
	require.Greater(t, pttl, 9*time.Second, "TTL 0 is 10 s")
	require.LessOrEqual(t, pttl, 10*time.Second)
	h, err := l.Holder()
	require.NoError(t, err)
	require.Equal(t, 0, h.Port)
	require.NoError(t, l.Unlock())
}

// The first acquisition refuses a server that may evict the lock key,
// unless told to accept it, and goes on with a warning when the server
// will not say.
func TestEvictionPolicy(t *testing.T) {
	needServer(t)
	checkNoLeak(t)
	ctx := context.Background()
	c := rawClient(t)
	require.NoError(t, c.ConfigSet(ctx, "maxmemory-policy", "volatile-lru").Err())
	t.Cleanup(func() { c.ConfigSet(ctx, "maxmemory-policy", "noeviction") })

	l, err := New(c, t.Name())
	require.NoError(t, err, "New talks to no server")
	err = l.TryLock()
	require.ErrorIs(t, err, ErrEvictionPolicy)
	require.ErrorContains(t, err, "maxmemory-policy is volatile-lru (set it to noeviction, or Locker.AllowEviction")
	require.ErrorIs(t, l.Lock(ctx), ErrEvictionPolicy, "Lock does not wait for a policy to change")
	require.ErrorIs(t, l.Err(), instancelock.ErrNotHeld)

	var logs proctest.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	l, err = New(c, t.Name())
	require.NoError(t, err)
	l.AllowEviction, l.Logger = true, log
	require.NoError(t, l.TryLock())
	require.Contains(t, logs.String(), "may evict")
	require.NoError(t, l.Unlock())
	require.NoError(t, c.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err())

	// A user that may not run CONFIG.
	require.NoError(t, c.Do(ctx, "ACL", "SETUSER", "lockonly", "on", ">secret", "~*", "+@all", "-config").Err())
	t.Cleanup(func() { c.Do(ctx, "ACL", "DELUSER", "lockonly") })
	logs.Reset()
	l, err = Open("redis://lockonly:secret@"+srv.Addr(), t.Name())
	require.NoError(t, err)
	l.Logger = log
	t.Cleanup(func() { l.Close() })
	require.NoError(t, l.TryLock())
	require.Contains(t, logs.String(), "cannot read the server's maxmemory-policy")
	require.NoError(t, l.Unlock())
}

// GracefulShutdown shuts the host down when the lock is lost.
func TestGracefulShutdownOnLoss(t *testing.T) {
	needServer(t)
	checkNoLeak(t)
	name := t.Name()
	l := open(t, name)
	l.TTL = 300 * time.Millisecond
	require.NoError(t, l.TryLock())
	g := instancelock.NewGracefulShutdown(l)
	require.Equal(t, l.InstanceID(), g.State().InstanceID())
	require.NoError(t, g.Start(context.Background()))
	require.NoError(t, rawClient(t).Del(context.Background(), name).Err())
	select {
	case <-g.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("no shutdown after the loss")
	}
	require.ErrorIs(t, context.Cause(g.Context()), instancelock.ErrLockLost)
	require.ErrorIs(t, context.Cause(g.Context()), ErrKeyChanged)
	require.Nil(t, l.Lost(), "the shutdown released the lock")
}

func TestParseValue(t *testing.T) {
	pl, err := instancelock.Current(0)
	require.NoError(t, err)
	h, _ := json.Marshal(pl)
	v, err := parseValue(`{"token":"ab","fence":18446744073709551615,"holder":` + string(h) + `}`)
	require.NoError(t, err)
	require.Equal(t, uint64(18446744073709551615), v.fence)
	require.True(t, pl.Equal(v.holder))
	for _, bad := range []string{
		"", "{", "[]", `{"token":"","fence":1,"holder":` + string(h) + `}`,
		`{"token":"ab","fence":-1,"holder":` + string(h) + `}`,
		`{"token":"ab","fence":1.5,"holder":` + string(h) + `}`,
		`{"token":"ab","fence":1}`,
		`{"token":"ab","fence":1,"holder":{"pid":0}}`,
		strings.Repeat(" ", maxValue+1),
	} {
		_, err := parseValue(bad)
		require.ErrorIs(t, err, instancelock.ErrInvalidLock, "%.40q", bad)
	}
	for _, bad := range [][]any{nil, {int64(1), "x"}, {"1", "x", int64(1)}, {int64(1), int64(2), int64(3)}} {
		_, _, _, err := parseReply(bad)
		require.Error(t, err)
	}
}
