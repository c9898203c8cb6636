//go:build unix

package main

// End-to-end tests of a fleet: three backends on one machine, each with its
// own PID file, database and port, and the same -lock URL, against a real
// PostgreSQL or Redis that the test starts on a free port of 127.0.0.1 (in
// a temporary directory, by internal/testserver; stopped by TestMain).
// Without the server's binaries the tests skip with the reason, unless
// CI=true, where they fail.

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock/internal/testserver"
	"github.com/ad5dec64/instancelock/pglock"
	"github.com/jackc/pgx/v5"
)

// Liveness bound of a takeover: generous for -race binaries on a loaded
// 2-core machine. The measured times are logged.
const takeoverTimeout = 15 * time.Second

// healthTimeout bounds the wait for a member's healthy answer.
const healthTimeout = 10 * time.Second

// postgresURL returns the URL of the test process's throwaway PostgreSQL
// (internal/testserver), started on first use and stopped by TestMain.
// Without PostgreSQL the test skips, unless CI=true, where it fails.
func postgresURL(t *testing.T) string {
	t.Helper()
	pg, err := testserver.SharedPostgres()
	testserver.Need(t, err)
	return pg.URL
}

// redisURL is postgresURL for a throwaway redis-server (no persistence,
// noeviction).
func redisURL(t *testing.T) string {
	t.Helper()
	r, err := testserver.SharedRedis()
	testserver.Need(t, err)
	return r.URL()
}

// --- The fleet ---

// fleetHealth is what the fleet tests read of /api/health.
type fleetHealth struct {
	Status             string          `json:"status"`
	PID                int             `json:"pid"`
	ActiveAgents       int             `json:"activeAgents"`
	OrchestratorActive *int            `json:"orchestratorActive"`
	FenceToken         *int64          `json:"fenceToken"`
	FleetLock          string          `json:"fleetLock"`
	Details            json.RawMessage `json:"details"` // why a check failed
}

func (h fleetHealth) String() string {
	active, fence := "nil", "nil"
	if h.OrchestratorActive != nil {
		active = strconv.Itoa(*h.OrchestratorActive)
	}
	if h.FenceToken != nil {
		fence = strconv.FormatInt(*h.FenceToken, 10)
	}
	return fmt.Sprintf("status %s, fleetLock %s, orchestratorActive %s, fenceToken %s, activeAgents %d, details %s",
		h.Status, h.FleetLock, active, fence, h.ActiveAgents, h.Details)
}

// member is one backend of the fleet.
type member struct {
	*backend
	name string // "A", "B", "C"
}

// startFleet launches n backends with the same -lock and waits until each
// is ready.
func startFleet(t *testing.T, n int, flags ...string) []*member {
	t.Helper()
	ms := make([]*member, n)
	for i := range ms {
		ms[i] = &member{name: string(rune('A' + i)),
			backend: start(t, launch{dir: t.TempDir(), port: freePort(t), flags: flags})}
	}
	for _, m := range ms {
		m.waitReady()
	}
	return ms
}

// health reads m's /api/health; ok is false when m cannot be reached.
// The servers are up all along, so it waits (up to healthTimeout) for a
// healthy answer with the fleet fields: 200 ok and fleetLock reachable; a
// check that timed out once on a loaded machine is asked again. The
// failure names the last answer with its details.
func (m *member) health() (h fleetHealth, ok bool) {
	m.t.Helper()
	deadline := time.Now().Add(healthTimeout)
	for {
		h = fleetHealth{}
		code, err := m.call("GET", "/api/health", &h)
		if err != nil {
			return h, false
		}
		if code == 200 && h.Status == "ok" && h.FleetLock == "reachable" && h.OrchestratorActive != nil && h.FenceToken != nil {
			return h, true
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("%s (pid %d): health %d {%v} for %v; want 200 ok, fleetLock reachable, orchestratorActive and fenceToken",
				m.name, m.pid(), code, h, healthTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitOneActive polls the members' health until exactly one reports
// orchestratorActive 1, and every other 0 with fenceToken 0, and returns
// it with its fencing token. The active one must hold the lock for more
// than one sweep, so a sweep during a hand-over does not count.
func waitOneActive(t *testing.T, ms []*member, what string) (*member, int64) {
	t.Helper()
	var active *member
	var fence int64
	var last string
	deadline := time.Now().Add(takeoverTimeout)
	for seen := 0; seen < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: no single active orchestrator within %v; last sweep: %s", what, takeoverTimeout, last)
		}
		var ones []*member
		var fences []int64
		var sweep []string
		for _, m := range ms {
			h, ok := m.health()
			if !ok {
				t.Fatalf("%s: %s (pid %d) does not answer", what, m.name, m.pid())
			}
			sweep = append(sweep, fmt.Sprintf("%s=%d/fence %d/agents %d", m.name, *h.OrchestratorActive, *h.FenceToken, h.ActiveAgents))
			switch *h.OrchestratorActive {
			case 1:
				ones = append(ones, m)
				fences = append(fences, *h.FenceToken)
				if *h.FenceToken <= 0 {
					t.Fatalf("%s: %s is active with fence token %d", what, m.name, *h.FenceToken)
				}
			case 0:
				if *h.FenceToken != 0 || h.ActiveAgents != 0 {
					t.Fatalf("%s: standby %s reports fence %d and %d running agents", what, m.name, *h.FenceToken, h.ActiveAgents)
				}
			default:
				t.Fatalf("%s: %s reports orchestratorActive %d", what, m.name, *h.OrchestratorActive)
			}
		}
		last = strings.Join(sweep, " ")
		if len(ones) > 1 {
			t.Fatalf("%s: more than one active orchestrator: %s", what, last)
		}
		if len(ones) == 1 && (active == nil || (ones[0] == active && fences[0] == fence)) {
			active, fence = ones[0], fences[0]
			seen++
		} else {
			active, seen = nil, 0
		}
	}
	t.Logf("%s: %s (pid %d) is the active orchestrator, fence %d (%s)", what, active.name, active.pid(), fence, last)
	return active, fence
}

// checkStandbysIdle checks what a standby does and does not do: it wrote
// no row since it last led, refuses to start an agent, and names the
// active member as the holder in /api/fleet.
func checkStandbysIdle(t *testing.T, ms []*member, active *member) {
	t.Helper()
	for _, m := range ms {
		var st fleetStatus
		m.must("GET", "/api/fleet", 200, &st)
		if st.Holder == nil || st.Holder.PID != active.pid() || st.Holder.Port != active.port {
			t.Fatalf("%s: /api/fleet = %+v; want the holder pid %d port %d", m.name, st, active.pid(), active.port)
		}
		if m == active {
			if !st.Active || st.FenceToken == 0 {
				t.Fatalf("%s (active): /api/fleet = %+v", m.name, st)
			}
			continue
		}
		if st.Active {
			t.Fatalf("%s (standby): /api/fleet says active", m.name)
		}
		var e map[string]string
		m.must("POST", "/api/agents", 503, &e)
		if !strings.Contains(e["error"], "standby") {
			t.Fatalf("%s: POST /api/agents on a standby answered %v", m.name, e)
		}
	}
}

// fencedRow is a row as the fleet audit reads it.
type fencedRow struct {
	db      string
	pid     int
	fence   int64
	created time.Time
}

// auditRows reads the rows of every member's database (the members have
// exited) and checks the fleet's promise: every row carries a fencing
// token, each token was used by one process only, and in the order the
// rows were written (one clock: one machine) the tokens never go down, so
// no holder wrote after a newer holder had begun. It returns the tokens
// seen, in order.
func auditRows(t *testing.T, ms []*member) []int64 {
	t.Helper()
	var all []fencedRow
	for _, m := range ms {
		rowsByPID(t, m.db) // integrity check
		db, err := OpenDB(context.Background(), m.db)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := db.sql.Query(`SELECT pid, fence, created_at FROM messages`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			r := fencedRow{db: m.name}
			var created string
			if err := rows.Scan(&r.pid, &r.fence, &created); err != nil {
				t.Fatal(err)
			}
			if r.created, err = time.Parse(time.RFC3339Nano, created); err != nil {
				t.Fatal(err)
			}
			all = append(all, r)
		}
		rows.Close()
		db.Close(context.Background())
	}
	sort.Slice(all, func(i, j int) bool { return all[i].created.Before(all[j].created) })
	owner := map[int64]int{}
	var fences []int64
	for i, r := range all {
		if r.fence <= 0 {
			t.Fatalf("a row of %s (pid %d) has no fencing token", r.db, r.pid)
		}
		if p, ok := owner[r.fence]; ok && p != r.pid {
			t.Fatalf("fencing token %d used by pids %d and %d", r.fence, p, r.pid)
		}
		owner[r.fence] = r.pid
		if i > 0 && r.fence < all[i-1].fence {
			t.Fatalf("a row with token %d (pid %d, %s) was written at %s, after a row with token %d (pid %d, %s) at %s",
				r.fence, r.pid, r.db, r.created.Format(time.RFC3339Nano),
				all[i-1].fence, all[i-1].pid, all[i-1].db, all[i-1].created.Format(time.RFC3339Nano))
		}
		if len(fences) == 0 || fences[len(fences)-1] != r.fence {
			fences = append(fences, r.fence)
		}
	}
	t.Logf("audit: %d rows in %d databases, tokens in write order %v", len(all), len(ms), fences)
	return fences
}

// stopFleet sends SIGTERM to every member still running and checks each
// exits 0; the active one must have stopped its agents, then released the
// fleet lock, then closed its database.
func stopFleet(t *testing.T, ms []*member, active *member) {
	t.Helper()
	var running []*member
	for _, m := range ms {
		select {
		case <-m.exited: // killed by the test
		default:
			m.signal(syscall.SIGTERM)
			running = append(running, m)
		}
	}
	for _, m := range running {
		if code := m.waitExit(exitTimeout); code != 0 {
			t.Fatalf("%s (pid %d) exited %d after SIGTERM; want 0:\n%s", m.name, m.pid(), code, m.log())
		}
		assertGone(t, m.pidfile)
		if !strings.Contains(m.lineWith(`msg="shutdown finished"`), "failures=0") {
			t.Errorf("%s: the shutdown had failures:\n%s", m.name, m.log())
		}
	}
	// The servers were up all along: no member had trouble reaching them,
	// and the only errors logged are losses of the lock.
	for _, m := range ms {
		for _, line := range strings.Split(m.log(), "\n") {
			if strings.Contains(line, "level=WARN") && !strings.Contains(line, "fleet lock lost: stopping the agents") ||
				strings.Contains(line, "level=ERROR") && !strings.Contains(line, " lost") {
				t.Errorf("%s logged: %s", m.name, line)
			}
		}
	}
	stopped, released := active.lineIndex(`msg="agents stopped"`), active.lineIndex(`msg="fleet lock released"`)
	if stopped < 0 || released < stopped || active.lineIndex(`msg="database closed"`) < released {
		t.Fatalf("%s: want agents stopped, then the fleet lock released, then the database closed:\n%s", active.name, active.log())
	}
}

// waitFenceRows waits until m's agents that write with the token fence
// have committed n rows.
func (m *member) waitFenceRows(fence int64, n int64) {
	m.t.Helper()
	eventually(m.t, 20*time.Second, fmt.Sprintf("%d rows with token %d from %s", n, fence, m.name), func() bool {
		var list agentList
		m.must("GET", "/api/agents", 200, &list)
		var rows int64
		for _, a := range list.Agents {
			if int64(a.Fence) == fence {
				rows += a.Messages
			}
		}
		return rows >= n
	})
}

// others returns ms without x.
func others(ms []*member, x *member) []*member {
	var out []*member
	for _, m := range ms {
		if m != x {
			out = append(out, m)
		}
	}
	return out
}

// TestE2EFleetPostgres: three backends on one -lock postgres://… URL.
// Exactly one runs agents; when the server ends its session
// (pg_terminate_backend) it stops its agents and goes back to standby, and
// one member takes over with a greater token; when the active one is
// SIGKILLed, a survivor takes over; SIGTERM stops them all with exit 0;
// and the rows of the three databases never show an old token after a
// newer one.
func TestE2EFleetPostgres(t *testing.T) {
	t.Parallel()
	url := postgresURL(t)
	ms := startFleet(t, 3, "-lock", url, "-agent-interval", "20ms")
	active, fence1 := waitOneActive(t, ms, "start")
	active.waitFenceRows(fence1, 5)
	checkStandbysIdle(t, ms, active)

	// The server ends the holder's session: the holder must stop its
	// agents and return to standby; one member (maybe the same) leads next.
	admin, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	key := pglock.Key(lockName)
	var terminated bool
	if err := admin.QueryRow(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1`,
		int64(uint64(key)>>32), int64(uint64(key)&0xffffffff)).Scan(&terminated); err != nil || !terminated {
		t.Fatalf("pg_terminate_backend of the holder's session: %v, %v", terminated, err)
	}
	sent := time.Now()
	eventually(t, takeoverTimeout, "the holder to report the loss", func() bool {
		return active.lineWith(`msg="agents stopped after the loss of the fleet lock"`) != ""
	})
	t.Logf("session terminated: the holder stopped its agents after %v", time.Since(sent).Round(time.Millisecond))
	next, fence2 := waitOneActive(t, ms, "after pg_terminate_backend")
	t.Logf("new active orchestrator %v after the termination", time.Since(sent).Round(time.Millisecond))
	if fence2 <= fence1 {
		t.Fatalf("fence token %d after the loss; want more than %d", fence2, fence1)
	}
	next.waitFenceRows(fence2, 5)

	// SIGKILL the active one: a survivor takes over.
	next.signal(syscall.SIGKILL)
	killed := time.Now()
	next.waitExit(exitTimeout)
	survivors := others(ms, next)
	last, fence3 := waitOneActive(t, survivors, "after SIGKILL")
	t.Logf("takeover %v after the SIGKILL", time.Since(killed).Round(time.Millisecond))
	if fence3 <= fence2 {
		t.Fatalf("fence token %d after the kill; want more than %d", fence3, fence2)
	}
	last.waitFenceRows(fence3, 5)
	checkStandbysIdle(t, survivors, last)

	stopFleet(t, ms, last)
	fences := auditRows(t, ms)
	for _, f := range []int64{fence1, fence2, fence3} {
		if !containsFence(fences, f) {
			t.Errorf("no row carries the token %d of a holding (tokens in the rows: %v)", f, fences)
		}
	}
}

// TestE2EFleetRedis: the same fleet on a -lock redis://… URL, with a 1 s
// lease: exactly one runs agents; SIGKILL the active one and a survivor
// takes over once the lease has expired; SIGTERM stops them all with exit
// 0; the rows never show an old token after a newer one.
func TestE2EFleetRedis(t *testing.T) {
	t.Parallel()
	url := redisURL(t)
	const ttl = time.Second
	ms := startFleet(t, 3, "-lock", url, "-lock-ttl", ttl.String(), "-agent-interval", "20ms")
	active, fence1 := waitOneActive(t, ms, "start")
	active.waitFenceRows(fence1, 5)
	checkStandbysIdle(t, ms, active)

	// Renewals keep the standbys out for several TTLs.
	time.Sleep(3 * ttl)
	if again, f := waitOneActive(t, ms, "after 3 TTLs"); again != active || f != fence1 {
		t.Fatalf("after 3 TTLs %s leads with token %d; want %s with %d", again.name, f, active.name, fence1)
	}

	active.signal(syscall.SIGKILL)
	killed := time.Now()
	active.waitExit(exitTimeout)
	survivors := others(ms, active)
	next, fence2 := waitOneActive(t, survivors, "after SIGKILL")
	took := time.Since(killed)
	t.Logf("takeover %v after the SIGKILL (TTL %v)", took.Round(time.Millisecond), ttl)
	if fence2 <= fence1 {
		t.Fatalf("fence token %d after the kill; want more than %d", fence2, fence1)
	}
	next.waitFenceRows(fence2, 5)
	checkStandbysIdle(t, survivors, next)

	stopFleet(t, ms, next)
	fences := auditRows(t, ms)
	for _, f := range []int64{fence1, fence2} {
		if !containsFence(fences, f) {
			t.Errorf("no row carries the token %d of a holding (tokens in the rows: %v)", f, fences)
		}
	}
}

func containsFence(fs []int64, f int64) bool {
	for _, x := range fs {
		if x == f {
			return true
		}
	}
	return false
}
