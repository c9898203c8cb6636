package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/redislock"
)

// fakeLock is a hand-written fleet lock: Lock returns when the test grants
// the lock (with a fencing token) or fails it, and the test can take the
// lock away (lose).
type fakeLock struct {
	grants chan uint64 // a token: Lock wins with it
	fails  chan error  // Lock returns this error

	mu      sync.Mutex
	held    bool
	isLost  bool
	lost    chan struct{}
	fence   uint64
	unlocks int // Unlock calls that released a holding
}

func newFakeLock() *fakeLock {
	return &fakeLock{grants: make(chan uint64), fails: make(chan error)}
}

func (l *fakeLock) TryLock() error { return errors.New("fakeLock: TryLock is not used") }

func (l *fakeLock) Lock(ctx context.Context) error {
	select {
	case f := <-l.grants:
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.held {
			return errors.New("fakeLock: Lock while held")
		}
		l.held, l.isLost, l.lost, l.fence = true, false, make(chan struct{}), f
		return nil
	case err := <-l.fails:
		return err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (l *fakeLock) Unlock() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held {
		l.unlocks++
	}
	l.held, l.isLost, l.lost = false, false, nil
	return nil
}

func (l *fakeLock) Holder() (instancelock.ProcessLock, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.held || l.isLost {
		return instancelock.ProcessLock{}, instancelock.ErrNotRunning
	}
	return instancelock.Current(3000)
}

func (l *fakeLock) Lost() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost
}

func (l *fakeLock) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case !l.held:
		return instancelock.ErrNotHeld
	case l.isLost:
		return instancelock.ErrLockLost
	}
	return nil
}

func (l *fakeLock) InstanceID() string { return "fake" }

func (l *fakeLock) FencingToken() (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.held || l.isLost {
		return 0, false
	}
	return l.fence, true
}

// lose takes the lock away from its holder, as a server ending the session
// or an expired lease does.
func (l *fakeLock) lose() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.isLost = true
	close(l.lost)
}

func (l *fakeLock) state() (held bool, unlocks int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held, l.unlocks
}

var discardLog = slog.New(slog.DiscardHandler)

// fencesOf returns the fencing tokens of db's rows in the order they were
// written.
func fencesOf(t *testing.T, db *DB) []uint64 {
	t.Helper()
	rows, err := db.sql.Query(`SELECT fence FROM messages ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var fs []uint64
	for rows.Next() {
		var f int64
		if err := rows.Scan(&f); err != nil {
			t.Fatal(err)
		}
		fs = append(fs, uint64(f))
	}
	return fs
}

func TestFleetLeadsOnlyWhileHoldingTheLock(t *testing.T) {
	o, db := newTestOrchestrator(t)
	lk := newFakeLock()
	f := NewFleet(lockSpec{desc: "fake", open: func() (fleetLock, error) { return lk, nil }}, o, 2, discardLog)

	// A standby runs nothing and starts nothing.
	if _, err := o.Start(""); !errors.Is(err, errStandby) {
		t.Fatalf("Start on a standby = %v; want errStandby", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.Start(ctx)
	if err := f.Check(ctx); err != nil {
		t.Fatalf("Check while nobody holds the lock = %v; want nil (the server answers)", err)
	}
	if st := f.Status(); st.Active || st.Holder != nil || st.Error != "" {
		t.Fatalf("Status of a standby with no holder = %+v", st)
	}
	if f.Active() != 0 || f.Fence() != 0 || o.Total() != 0 {
		t.Fatalf("before the lock: Active %d Fence %d agents %d", f.Active(), f.Fence(), o.Total())
	}

	// Granted with token 7: two agents write rows carrying 7.
	lk.grants <- 7
	waitFor(t, 10*time.Second, "promotion with token 7", func() bool {
		return f.Active() == 1 && f.Fence() == 7 && o.Active() == 2
	})
	if leading, fence := o.Leading(); !leading || fence != 7 {
		t.Fatalf("Leading = %v, %d; want true, 7", leading, fence)
	}
	if st := f.Status(); !st.Active || st.FenceToken != 7 || st.Holder == nil || st.Holder.PID != os.Getpid() {
		t.Fatalf("Status of the holder = %+v", st)
	}
	if err := f.Check(ctx); err != nil {
		t.Fatalf("Check while holding = %v", err)
	}
	waitFor(t, 10*time.Second, "rows", func() bool { n, _ := db.Count(ctx); return n >= 6 })

	// Lost: the agents stop before the Fleet waits again, and write nothing
	// more.
	lk.lose()
	waitFor(t, 10*time.Second, "demotion", func() bool {
		_, unlocks := lk.state()
		return f.Active() == 0 && f.Fence() == 0 && o.Active() == 0 && unlocks == 1
	})
	n, _ := db.Count(ctx)
	time.Sleep(30 * time.Millisecond) // six agent intervals
	if m, _ := db.Count(ctx); m != n {
		t.Fatalf("rows went from %d to %d after the loss", n, m)
	}
	if _, err := o.Start(""); !errors.Is(err, errStandby) {
		t.Fatalf("Start after the loss = %v; want errStandby", err)
	}

	// Granted again with token 9: new agents, new token.
	lk.grants <- 9
	waitFor(t, 10*time.Second, "promotion with token 9", func() bool {
		return f.Active() == 1 && f.Fence() == 9 && o.Active() == 2 && o.Total() == 4
	})
	waitFor(t, 10*time.Second, "rows with token 9", func() bool { m, _ := db.Count(ctx); return m >= n+4 })

	// Shutdown: the context ends, the agents stop, then Release unlocks.
	cancel()
	if err := o.StopAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := f.Release(context.Background()); err != nil {
		t.Fatalf("Release = %v", err)
	}
	if held, unlocks := lk.state(); held || unlocks != 2 {
		t.Fatalf("after Release: held %v, %d unlocks; want released twice", held, unlocks)
	}
	if f.Active() != 0 || f.Fence() != 0 {
		t.Fatalf("after Release: Active %d Fence %d", f.Active(), f.Fence())
	}
	if err := f.Release(context.Background()); err != nil {
		t.Fatalf("second Release = %v", err)
	}

	// The rows: token 7, then token 9, never back.
	fs := fencesOf(t, db)
	for i := range fs {
		if fs[i] != 7 && fs[i] != 9 || i > 0 && fs[i] < fs[i-1] {
			t.Fatalf("tokens in write order: %v", fs)
		}
	}
	if fs[0] != 7 || fs[len(fs)-1] != 9 {
		t.Fatalf("tokens in write order: %v; want 7s then 9s", fs)
	}
}

func TestFleetRetriesWhileTheServerIsUnreachable(t *testing.T) {
	o, _ := newTestOrchestrator(t)
	lk := newFakeLock()
	refused := errors.New("dial tcp 127.0.0.1:5432: connection refused")
	var mu sync.Mutex
	opens := 0
	open := func() (fleetLock, error) {
		mu.Lock()
		defer mu.Unlock()
		opens++
		if opens <= 2 {
			return nil, refused
		}
		return lk, nil
	}
	f := NewFleet(lockSpec{desc: "fake", open: open}, o, 1, discardLog)
	if err := f.Check(context.Background()); !errors.Is(err, errNotConnected) {
		t.Fatalf("Check before Start = %v; want errNotConnected", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.Start(ctx)
	// The first attempt fails: the check says why (it waits for that
	// attempt rather than report "not connected").
	if err := f.Check(ctx); !errors.Is(err, refused) {
		t.Fatalf("Check after a refused connection = %v; want it", err)
	}
	if st := f.Status(); st.Error != refused.Error() {
		t.Fatalf("Status = %+v; want the error", st)
	}
	// Then it connects and waits in Lock; Lock fails (the server went
	// away during the wait) and is called again.
	waitFor(t, 10*time.Second, "a connection", func() bool { return f.Check(ctx) == nil })
	lk.fails <- refused // received: the loop waits in Lock
	lk.grants <- 3      // received: the loop called Lock again
	if st := f.Status(); st.Error != "" {
		t.Fatalf("Status = %+v; want no error once the lock is reachable", st)
	}
	waitFor(t, 10*time.Second, "promotion", func() bool { return f.Active() == 1 && o.Active() == 1 })
	if err := f.Check(ctx); err != nil {
		t.Fatalf("Check while holding = %v", err)
	}
	cancel()
	o.StopAll(context.Background())
	if err := f.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A lock won while the shutdown is under way starts no agent and is
// released by Release.
func TestFleetLockWonDuringShutdown(t *testing.T) {
	o, _ := newTestOrchestrator(t)
	lk := newFakeLock()
	f := NewFleet(lockSpec{desc: "fake", open: func() (fleetLock, error) { return lk, nil }}, o, 2, discardLog)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.Start(ctx)
	if err := o.StopAll(context.Background()); err != nil { // the "stop agents" hook ran first
		t.Fatal(err)
	}
	lk.grants <- 4 // Lock wins just now
	// The loop ends by itself: Promote refuses once StopAll has begun.
	if err := f.Release(context.Background()); err != nil {
		t.Fatalf("Release = %v", err)
	}
	if o.Total() != 0 {
		t.Fatalf("%d agents started during the shutdown", o.Total())
	}
	if held, unlocks := lk.state(); held || unlocks != 1 {
		t.Fatalf("after Release: held %v, %d unlocks; want the won lock released", held, unlocks)
	}
}

// Release before Start returns at once; Start after Release does nothing.
func TestFleetReleaseBeforeStart(t *testing.T) {
	o, _ := newTestOrchestrator(t)
	opened := false
	f := NewFleet(lockSpec{desc: "fake", open: func() (fleetLock, error) { opened = true; return newFakeLock(), nil }}, o, 1, discardLog)
	if err := f.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.Start(context.Background())
	time.Sleep(20 * time.Millisecond)
	if opened {
		t.Fatal("Start after Release opened the lock")
	}
}

// Release gives up when the loop does not end within its context.
func TestFleetReleaseTimesOut(t *testing.T) {
	o, _ := newTestOrchestrator(t)
	lk := newFakeLock()
	f := NewFleet(lockSpec{desc: "fake", open: func() (fleetLock, error) { return lk, nil }}, o, 1, discardLog)
	ctx, cancel := context.WithCancel(context.Background())
	f.Start(ctx) // never cancelled before Release below
	rctx, rcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer rcancel()
	if err := f.Release(rctx); err == nil || !strings.Contains(err.Error(), "did not stop") {
		t.Fatalf("Release while the loop runs = %v; want an error", err)
	}
	cancel()
}

func TestLockSpec(t *testing.T) {
	for _, tc := range []struct {
		url, scheme string
	}{
		{"postgres://u@h/db", "postgres"}, {"postgresql://h/db", "postgres"}, {"POSTGRES://h", "postgres"},
		{"redis://h:6379", "redis"}, {"rediss://h:6380/1", "redis"},
		{"mysql://h", ""}, {"h:6379", ""}, {"", ""}, {"unix:///tmp/redis.sock", ""},
	} {
		if got := lockScheme(tc.url); got != tc.scheme {
			t.Errorf("lockScheme(%q) = %q; want %q", tc.url, got, tc.scheme)
		}
	}
	if got := redactURL("postgres://app:s3cret@db:5432/app"); strings.Contains(got, "s3cret") || !strings.Contains(got, "app:xxxxx@db:5432") {
		t.Errorf("redactURL = %q", got)
	}

	pg, err := newLockSpec(config{Lock: "postgres://app:s3cret@127.0.0.1:1/app", Port: 3001}, discardLog)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(pg.desc, "s3cret") || !strings.Contains(pg.desc, `postgres lock "orchestrator"`) {
		t.Errorf("desc = %q", pg.desc)
	}
	lk, err := pg.open() // connects to nothing
	if err != nil || lk == nil {
		t.Fatalf("open = %v, %v", lk, err)
	}
	rd, err := newLockSpec(config{Lock: "redis://:s3cret@127.0.0.1:1/0", LockTTL: time.Second}, discardLog)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(rd.desc, "s3cret") || !strings.Contains(rd.desc, `redis lock "orchestrator"`) {
		t.Errorf("desc = %q", rd.desc)
	}
	// Port 1 of loopback: nobody answers. Open connects to nothing; the
	// Locker carries the flags, and its first TryLock says the server
	// cannot be reached.
	rlk, err := rd.open()
	if err != nil {
		t.Fatalf("redis open = %v", err)
	}
	defer closeLock(rlk)
	if r := rlk.(*redislock.Locker); r.TTL != time.Second || r.Logger != discardLog {
		t.Errorf("redis Locker fields TTL=%v Logger=%v; want -lock-ttl 1s and the backend's logger", r.TTL, r.Logger)
	}
	if err := rlk.TryLock(); err == nil || !strings.Contains(err.Error(), "checking the server") {
		t.Errorf("TryLock on a closed port = %v; want an error checking the server", err)
	}

	for _, bad := range []string{"postgres://h:notaport/db", "redis://h:6379/notadb"} {
		if _, err := newLockSpec(config{Lock: bad}, discardLog); err == nil || !strings.HasPrefix(err.Error(), "invalid -lock") {
			t.Errorf("newLockSpec(%q) = %v; want invalid -lock", bad, err)
		}
	}
}

// A -lock URL that cannot be parsed is a usage error, reported in one line
// before anything is locked or created.
func TestRunBadLockURL(t *testing.T) {
	dir := t.TempDir()
	pidfile := filepath.Join(dir, "data", "backend.pid")
	for _, bad := range []string{"postgres://h:notaport/db", "redis://h:6379/notadb", "mysql://h/db"} {
		var out strings.Builder
		if code := run([]string{"-pidfile", pidfile, "-lock", bad}, envOf(), &out); code != exitUsage {
			t.Errorf("-lock %s: exit %d; want %d", bad, code, exitUsage)
		}
		if msg := strings.TrimSpace(out.String()); !strings.HasPrefix(msg, "invalid -lock") || strings.Contains(msg, "\n") {
			t.Errorf("-lock %s: message %q; want one line saying invalid -lock", bad, msg)
		}
	}
	if _, err := os.Stat(filepath.Dir(pidfile)); err == nil {
		t.Error("a bad -lock created the data directory")
	}
}
