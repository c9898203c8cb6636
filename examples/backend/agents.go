package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"
)

// Errors of the Orchestrator.
var (
	errNoAgent  = errors.New("no such agent")
	errStopping = errors.New("the orchestrator is stopping; no new agents")
	errStandby  = errors.New("this instance is a standby: only the holder of the fleet lock runs agents (see GET /api/fleet)")
)

// AgentStatus is "running" or "stopped".
type AgentStatus string

// The agent statuses.
const (
	AgentRunning AgentStatus = "running"
	AgentStopped AgentStatus = "stopped"
)

// AgentInfo is what the API shows of an agent.
type AgentInfo struct {
	ID        string      `json:"id"`
	Name      string      `json:"name"`
	Status    AgentStatus `json:"status"`
	StartedAt time.Time   `json:"startedAt"`
	StoppedAt *time.Time  `json:"stoppedAt,omitempty"`
	Messages  int64       `json:"messages"` // rows committed by this agent
	Errors    int64       `json:"errors"`   // writes that failed
	LastError string      `json:"lastError,omitempty"`
	Fence     uint64      `json:"fence,omitempty"` // the fencing token its rows carry; 0 without a fleet lock
}

// agent is one background worker: a goroutine that writes a message row
// every interval until its context is cancelled.
type agent struct {
	num    int    // 1 for the first agent started
	id     string // info.ID, readable without the lock
	name   string // info.Name, readable without the lock
	fence  uint64 // info.Fence, readable without the lock
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine has returned

	mu   sync.Mutex // guards info
	info AgentInfo
}

func (a *agent) snapshot() AgentInfo {
	a.mu.Lock()
	defer a.mu.Unlock()
	info := a.info
	if info.StoppedAt != nil {
		t := *info.StoppedAt
		info.StoppedAt = &t
	}
	return info
}

// Orchestrator runs the agents. Each agent's rows carry this process's
// PID and instance id, so rows written by two processes can be told apart,
// and the fencing token it was started with (0 without a fleet lock).
// It is safe for concurrent use.
//
// With a fleet lock the orchestrator is either leading (Promote: agents may
// run) or a standby (Demote: no agent runs and Start refuses); without one
// it always leads, with fencing token 0.
type Orchestrator struct {
	db         *DB
	pid        int
	instanceID string
	interval   time.Duration
	log        *slog.Logger

	mu      sync.Mutex
	agents  map[string]*agent
	nextID  int
	closing bool
	standby bool   // a fleet member that does not hold the fleet lock
	fence   uint64 // the fencing token of agents started now
}

// NewOrchestrator returns an Orchestrator whose agents write to db every
// interval.
func NewOrchestrator(db *DB, pid int, instanceID string, interval time.Duration, log *slog.Logger) *Orchestrator {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Orchestrator{db: db, pid: pid, instanceID: instanceID, interval: interval, log: log,
		agents: map[string]*agent{}}
}

// Start starts a new agent ("" names it after its id) and returns it. The
// agent writes its first row at once, then one per interval, each carrying
// the current fencing token. After StopAll has begun, Start fails with
// errStopping; on a standby (after Demote) with errStandby.
func (o *Orchestrator) Start(name string) (AgentInfo, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.startLocked(name)
}

// startLocked is Start; o.mu is held.
func (o *Orchestrator) startLocked(name string) (AgentInfo, error) {
	switch {
	case o.closing:
		return AgentInfo{}, errStopping
	case o.standby:
		return AgentInfo{}, errStandby
	}
	o.nextID++
	id := fmt.Sprintf("agent-%d", o.nextID)
	if name == "" {
		name = id
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &agent{num: o.nextID, id: id, name: name, fence: o.fence, cancel: cancel, done: make(chan struct{}),
		info: AgentInfo{ID: id, Name: name, Status: AgentRunning, StartedAt: time.Now().UTC().Truncate(time.Millisecond), Fence: o.fence}}
	o.agents[id] = a
	go o.run(ctx, a)
	if o.fence != 0 {
		o.log.Info("agent started", "agent", id, "name", name, "fence", o.fence)
	} else {
		o.log.Info("agent started", "agent", id, "name", name)
	}
	return a.snapshot(), nil
}

// Promote makes the orchestrator lead with the fencing token fence and
// starts n agents that write with it. It is how a fleet member that has
// just taken the fleet lock starts its work. After StopAll has begun it
// fails with errStopping and starts nothing. Promoting a leading
// orchestrator changes the token of agents started from then on.
func (o *Orchestrator) Promote(fence uint64, n int) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closing {
		return errStopping
	}
	o.standby, o.fence = false, fence
	for range n {
		if _, err := o.startLocked(""); err != nil {
			return err
		}
	}
	return nil
}

// Demote makes the orchestrator a standby: Start refuses from now on, and
// every running agent is stopped and waited for, or until ctx is done (the
// error then names the agents still running; they were cancelled and stop
// at their next write). It is what a fleet member does the moment it loses
// the fleet lock, and what it is before it first gets it. Demoting a
// standby does nothing.
func (o *Orchestrator) Demote(ctx context.Context) error {
	o.mu.Lock()
	o.standby, o.fence = true, 0
	all := o.allLocked()
	o.mu.Unlock()
	return o.stopEach(ctx, all)
}

// Leading reports whether agents may run (false on a standby or once
// StopAll has begun), and the fencing token they write with.
func (o *Orchestrator) Leading() (bool, uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return !o.standby && !o.closing, o.fence
}

func (o *Orchestrator) run(ctx context.Context, a *agent) {
	defer close(a.done)
	t := time.NewTicker(o.interval)
	defer t.Stop()
	var seq int64
	for {
		seq++
		_, err := o.db.Insert(ctx, Message{AgentID: a.id, Seq: seq, PID: o.pid, InstanceID: o.instanceID,
			Fence: a.fence, Body: fmt.Sprintf("%s says hello #%d", a.name, seq)})
		if ctx.Err() != nil {
			// Stopped while writing: the row may or may not be committed;
			// the count below only includes acknowledged rows.
			return
		}
		a.mu.Lock()
		if err != nil {
			a.info.Errors++
			a.info.LastError = err.Error()
		} else {
			a.info.Messages++
		}
		a.mu.Unlock()
		if err != nil {
			o.log.Warn("agent write failed", "agent", a.id, "err", err)
		} else {
			o.log.Debug("agent wrote a message", "agent", a.id, "seq", seq)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Stop stops the agent id and waits for its goroutine to return, or for
// ctx to be done. Stopping a stopped agent returns it unchanged. An
// unknown id gives errNoAgent.
func (o *Orchestrator) Stop(ctx context.Context, id string) (AgentInfo, error) {
	o.mu.Lock()
	a, ok := o.agents[id]
	o.mu.Unlock()
	if !ok {
		return AgentInfo{}, errNoAgent
	}
	if err := o.stop(ctx, a); err != nil {
		return a.snapshot(), err
	}
	return a.snapshot(), nil
}

func (o *Orchestrator) stop(ctx context.Context, a *agent) error {
	a.cancel()
	select {
	case <-a.done:
	case <-ctx.Done():
		return fmt.Errorf("agent %s did not stop: %w", a.id, context.Cause(ctx))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.info.Status == AgentRunning {
		now := time.Now().UTC().Truncate(time.Millisecond)
		a.info.Status, a.info.StoppedAt = AgentStopped, &now
		o.log.Info("agent stopped", "agent", a.info.ID, "messages", a.info.Messages)
	}
	return nil
}

// StopAll refuses new agents from now on, stops every agent and waits for
// them, or for ctx to be done (the error then names the agents still
// running). It is the "stop agents" shutdown hook; a second call only
// waits again.
func (o *Orchestrator) StopAll(ctx context.Context) error {
	o.mu.Lock()
	o.closing = true
	all := o.allLocked()
	o.mu.Unlock()
	return o.stopEach(ctx, all)
}

// allLocked returns every agent; o.mu is held.
func (o *Orchestrator) allLocked() []*agent {
	all := make([]*agent, 0, len(o.agents))
	for _, a := range o.agents {
		all = append(all, a)
	}
	return all
}

// stopEach cancels every agent of all at once, then waits for each.
func (o *Orchestrator) stopEach(ctx context.Context, all []*agent) error {
	for _, a := range all {
		a.cancel()
	}
	var errs []error
	for _, a := range all {
		errs = append(errs, o.stop(ctx, a))
	}
	return errors.Join(errs...)
}

// List returns every agent started so far, running or stopped, in the
// order they were started.
func (o *Orchestrator) List() []AgentInfo {
	o.mu.Lock()
	all := o.allLocked()
	o.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i].num < all[j].num })
	infos := make([]AgentInfo, 0, len(all))
	for _, a := range all {
		infos = append(infos, a.snapshot())
	}
	return infos
}

// Get returns the agent id, or errNoAgent.
func (o *Orchestrator) Get(id string) (AgentInfo, error) {
	o.mu.Lock()
	a, ok := o.agents[id]
	o.mu.Unlock()
	if !ok {
		return AgentInfo{}, errNoAgent
	}
	return a.snapshot(), nil
}

// Active returns the number of running agents.
func (o *Orchestrator) Active() int {
	n := 0
	for _, a := range o.List() {
		if a.Status == AgentRunning {
			n++
		}
	}
	return n
}

// Total returns the number of agents started so far, running or stopped.
func (o *Orchestrator) Total() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.agents)
}
