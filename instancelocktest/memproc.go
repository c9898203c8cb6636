package instancelocktest

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/ad5dec64/instancelock"
)

// MemProcesses is an instancelock.ProcessTable for tests (set it as a
// Locker's Processes): a table of made-up processes,
// each with a pid, a start token and a start time. It is safe for
// concurrent use; the zero value is an empty table ready to use.
//
// It answers as the operating system's table (the Locker's default) does: a
// pid of 0 or less is an error matching instancelock.ErrInvalidLock; a pid
// that is not in the table is dead (Alive reports false, Start and Signal
// fail with an error matching instancelock.ErrNoProcess). Signal records
// the signals it delivers (see Signals) and changes nothing else: a test
// that wants the process to exit calls Remove. Fail injects errors.
type MemProcesses struct {
	mu      sync.Mutex
	procs   map[int]memProc
	signals []SentSignal
	faults  []memProcFault
}

type memProc struct {
	token string
	at    time.Time
}

type memProcFault struct {
	op  string
	pid int
	err error
}

// SentSignal is a signal MemProcesses.Signal delivered.
type SentSignal struct {
	PID    int
	Signal os.Signal
}

var _ instancelock.ProcessTable = (*MemProcesses)(nil)

// NewMemProcesses returns an empty process table.
func NewMemProcesses() *MemProcesses { return &MemProcesses{} }

// Add puts a live process in the table, or replaces the one with this pid
// (the pid was reused). token is what Start returns for it ("" as on a
// platform that cannot tell processes apart), startedAt its start time.
func (p *MemProcesses) Add(pid int, token string, startedAt time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.procs == nil {
		p.procs = map[int]memProc{}
	}
	p.procs[pid] = memProc{token, startedAt}
}

// Remove takes the process out of the table: it has exited. Removing a pid
// that is not there does nothing.
func (p *MemProcesses) Remove(pid int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.procs, pid)
}

// Fail makes every later call of op ("alive", "start" or "signal") for pid
// (0 means any pid) return err, until Clear; the call does nothing else (a
// failed Signal is not recorded). A nil err removes the rule registered
// with the same op and pid. Fail panics on an unknown op.
func (p *MemProcesses) Fail(op string, pid int, err error) {
	if op != "alive" && op != "start" && op != "signal" {
		panic(fmt.Sprintf("instancelocktest: MemProcesses.Fail: unknown op %q (want alive, start or signal)", op))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = slices.DeleteFunc(p.faults, func(f memProcFault) bool { return f.op == op && f.pid == pid })
	if err != nil {
		p.faults = append(p.faults, memProcFault{op, pid, err})
	}
}

// Clear removes every rule of Fail.
func (p *MemProcesses) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = nil
}

// Signals returns the signals delivered so far, oldest first.
func (p *MemProcesses) Signals() []SentSignal {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.signals)
}

// check validates pid and returns the injected error of op for it. p.mu is
// held.
func (p *MemProcesses) check(op string, pid int) error {
	if pid <= 0 {
		return fmt.Errorf("pid %d: %w", pid, instancelock.ErrInvalidLock)
	}
	for _, f := range p.faults {
		if f.op == op && (f.pid == 0 || f.pid == pid) {
			return f.err
		}
	}
	return nil
}

// Alive implements ProcessTable: it reports whether pid is in the table.
func (p *MemProcesses) Alive(pid int) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.check("alive", pid); err != nil {
		return false, err
	}
	_, ok := p.procs[pid]
	return ok, nil
}

// Start implements ProcessTable: it returns the token and start time given
// to Add.
func (p *MemProcesses) Start(pid int) (string, time.Time, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.check("start", pid); err != nil {
		return "", time.Time{}, err
	}
	pr, ok := p.procs[pid]
	if !ok {
		return "", time.Time{}, fmt.Errorf("pid %d: %w", pid, instancelock.ErrNoProcess)
	}
	return pr.token, pr.at, nil
}

// Signal implements ProcessTable: it records sig as delivered to pid. A nil
// sig is rejected.
func (p *MemProcesses) Signal(pid int, sig os.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.check("signal", pid); err != nil {
		return err
	}
	if sig == nil {
		return errors.New("instancelocktest: nil signal")
	}
	if _, ok := p.procs[pid]; !ok {
		return fmt.Errorf("signal %v to pid %d: %w", sig, pid, instancelock.ErrNoProcess)
	}
	p.signals = append(p.signals, SentSignal{pid, sig})
	return nil
}
