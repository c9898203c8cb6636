package main

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// waitFor polls cond until it is true, failing the test after d (a liveness
// bound, not a speed goal).
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newTestOrchestrator(t *testing.T) (*Orchestrator, *DB) {
	t.Helper()
	db := openTestDB(t, filepath.Join(t.TempDir(), "backend.db"))
	o := NewOrchestrator(db, 4242, "instance-1", 5*time.Millisecond, nil)
	t.Cleanup(func() { o.StopAll(context.Background()) })
	return o, db
}

func rowsOf(t *testing.T, db *DB, agentID string) int64 {
	t.Helper()
	var n int64
	if err := db.sql.QueryRow(`SELECT count(*) FROM messages WHERE agent_id = ?`, agentID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestOrchestratorAgentsWriteUntilStopped(t *testing.T) {
	ctx := context.Background()
	o, db := newTestOrchestrator(t)
	a1, err := o.Start("")
	if err != nil {
		t.Fatal(err)
	}
	a2, err := o.Start("scribe")
	if err != nil {
		t.Fatal(err)
	}
	if a1.ID != "agent-1" || a1.Name != "agent-1" || a2.ID != "agent-2" || a2.Name != "scribe" || a1.Status != AgentRunning {
		t.Fatalf("started %+v and %+v", a1, a2)
	}
	if o.Active() != 2 || o.Total() != 2 {
		t.Fatalf("Active, Total = %d, %d; want 2, 2", o.Active(), o.Total())
	}
	waitFor(t, 10*time.Second, "both agents to write 3 rows", func() bool {
		g1, _ := o.Get("agent-1")
		g2, _ := o.Get("agent-2")
		return g1.Messages >= 3 && g2.Messages >= 3
	})

	stopped, err := o.Stop(ctx, "agent-1")
	if err != nil {
		t.Fatal(err)
	}
	if stopped.Status != AgentStopped || stopped.StoppedAt == nil {
		t.Fatalf("after Stop: %+v", stopped)
	}
	// Once Stop has returned the agent writes nothing more; every row it
	// counted is in the database (one more may have been committed while
	// it was being cancelled).
	rows := rowsOf(t, db, "agent-1")
	if rows < stopped.Messages || rows > stopped.Messages+1 {
		t.Fatalf("agent-1 has %d rows, counted %d", rows, stopped.Messages)
	}
	waitFor(t, 10*time.Second, "agent-2 to write 3 more rows", func() bool {
		g2, _ := o.Get("agent-2")
		return rowsOf(t, db, "agent-2") >= g2.Messages && g2.Messages >= 6
	})
	if after := rowsOf(t, db, "agent-1"); after != rows {
		t.Fatalf("the stopped agent-1 went on writing: %d rows, then %d", rows, after)
	}
	if o.Active() != 1 || o.Total() != 2 {
		t.Fatalf("Active, Total = %d, %d; want 1, 2", o.Active(), o.Total())
	}
	// Stopping again is harmless and changes nothing.
	again, err := o.Stop(ctx, "agent-1")
	if err != nil || !again.StoppedAt.Equal(*stopped.StoppedAt) {
		t.Fatalf("second Stop = %+v, %v", again, err)
	}
	if _, err := o.Stop(ctx, "agent-99"); !errors.Is(err, errNoAgent) {
		t.Fatalf("Stop(unknown) = %v; want errNoAgent", err)
	}
	if _, err := o.Get("agent-99"); !errors.Is(err, errNoAgent) {
		t.Fatalf("Get(unknown) = %v; want errNoAgent", err)
	}

	// Every row carries the writer's pid and instance id.
	ws, err := db.Writers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 1 || ws[0].PID != 4242 || ws[0].InstanceID != "instance-1" {
		t.Fatalf("Writers = %+v; want only pid 4242, instance-1", ws)
	}
}

func TestOrchestratorStopAll(t *testing.T) {
	ctx := context.Background()
	o, db := newTestOrchestrator(t)
	for range 3 {
		if _, err := o.Start(""); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "a row from each agent", func() bool {
		for _, a := range o.List() {
			if a.Messages == 0 {
				return false
			}
		}
		return true
	})
	if err := o.StopAll(ctx); err != nil {
		t.Fatal(err)
	}
	list := o.List()
	if len(list) != 3 {
		t.Fatalf("List after StopAll has %d agents; want 3", len(list))
	}
	for i, a := range list {
		if a.Status != AgentStopped || a.ID != []string{"agent-1", "agent-2", "agent-3"}[i] {
			t.Errorf("List()[%d] = %+v; want agent-%d, stopped", i, a, i+1)
		}
	}
	if o.Active() != 0 {
		t.Errorf("Active after StopAll = %d", o.Active())
	}
	// StopAll returned: nothing writes any more, so the database can close.
	n, _ := db.Count(ctx)
	time.Sleep(30 * time.Millisecond) // six intervals
	if m, _ := db.Count(ctx); m != n {
		t.Fatalf("rows went from %d to %d after StopAll", n, m)
	}
	if _, err := o.Start("late"); !errors.Is(err, errStopping) {
		t.Fatalf("Start after StopAll = %v; want errStopping", err)
	}
	if err := o.StopAll(ctx); err != nil {
		t.Fatalf("second StopAll = %v", err)
	}
}

func TestOrchestratorWriteErrorsAreCounted(t *testing.T) {
	o, db := newTestOrchestrator(t)
	// Close the database under a running agent (the shutdown order forbids
	// this; the agent must survive it and report it).
	db.Close(context.Background())
	if _, err := o.Start(""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a failed write", func() bool {
		a, _ := o.Get("agent-1")
		return a.Errors >= 2
	})
	a, _ := o.Get("agent-1")
	if a.Messages != 0 || a.LastError == "" {
		t.Fatalf("agent after failed writes: %+v", a)
	}
}

func TestOrchestratorPromoteDemote(t *testing.T) {
	ctx := context.Background()
	o, db := newTestOrchestrator(t)
	if leading, fence := o.Leading(); !leading || fence != 0 {
		t.Fatalf("a new orchestrator: Leading = %v, %d; want true, 0 (no fleet lock)", leading, fence)
	}
	if err := o.Demote(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Start(""); !errors.Is(err, errStandby) {
		t.Fatalf("Start on a standby = %v; want errStandby", err)
	}
	if leading, _ := o.Leading(); leading {
		t.Fatal("Leading after Demote")
	}

	if err := o.Promote(5, 2); err != nil {
		t.Fatal(err)
	}
	if leading, fence := o.Leading(); !leading || fence != 5 {
		t.Fatalf("Leading = %v, %d; want true, 5", leading, fence)
	}
	waitFor(t, 10*time.Second, "rows from both agents", func() bool {
		for _, a := range o.List() {
			if a.Messages == 0 {
				return false
			}
		}
		return true
	})
	for _, a := range o.List() {
		if a.Fence != 5 || a.Status != AgentRunning {
			t.Fatalf("agent after Promote(5): %+v", a)
		}
	}
	// An agent started through the API while leading writes with the token.
	api, err := o.Start("scribe")
	if err != nil || api.Fence != 5 {
		t.Fatalf("Start while leading = %+v, %v", api, err)
	}

	// Demote stops every agent, and nothing is written after it returns.
	if err := o.Demote(ctx); err != nil {
		t.Fatal(err)
	}
	if o.Active() != 0 || o.Total() != 3 {
		t.Fatalf("after Demote: Active %d Total %d; want 0, 3", o.Active(), o.Total())
	}
	n, _ := db.Count(ctx)
	time.Sleep(30 * time.Millisecond) // six intervals
	if m, _ := db.Count(ctx); m != n {
		t.Fatalf("rows went from %d to %d after Demote", n, m)
	}
	if err := o.Demote(ctx); err != nil { // a standby: nothing to do
		t.Fatal(err)
	}

	// Promoted again with a greater token.
	if err := o.Promote(6, 1); err != nil {
		t.Fatal(err)
	}
	a, _ := o.Get("agent-4")
	if a.Fence != 6 || a.Status != AgentRunning {
		t.Fatalf("agent-4 = %+v; want running with token 6", a)
	}
	waitFor(t, 10*time.Second, "a row with token 6", func() bool { a, _ := o.Get("agent-4"); return a.Messages > 0 })
	var rows5, rows6, others int64
	if err := db.sql.QueryRow(`SELECT count(*) FILTER (WHERE fence = 5), count(*) FILTER (WHERE fence = 6),
		count(*) FILTER (WHERE fence NOT IN (5, 6)) FROM messages`).Scan(&rows5, &rows6, &others); err != nil {
		t.Fatal(err)
	}
	if rows5 < 2 || rows6 < 1 || others != 0 {
		t.Fatalf("rows with token 5: %d, 6: %d, other: %d", rows5, rows6, others)
	}

	// After StopAll, Promote refuses and starts nothing.
	if err := o.StopAll(ctx); err != nil {
		t.Fatal(err)
	}
	if err := o.Promote(7, 2); !errors.Is(err, errStopping) {
		t.Fatalf("Promote after StopAll = %v; want errStopping", err)
	}
	if o.Total() != 4 {
		t.Fatalf("Total after a refused Promote = %d; want 4", o.Total())
	}
}

func mustCount(t *testing.T, db *DB) int64 {
	t.Helper()
	n, err := db.Count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}
