//go:build unix

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock/internal/testserver"
)

// promTimeout bounds each wait for Prometheus: its start, and a series to
// reach a value (a few scrapes 1 s apart, on a loaded 2-core machine).
const promTimeout = 60 * time.Second

// promServer is a real Prometheus server started by a test on loopback.
type promServer struct {
	t    *testing.T
	base string // http://127.0.0.1:PORT
	cmd  *exec.Cmd

	mu  sync.Mutex
	out bytes.Buffer
}

func (p *promServer) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *promServer) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// startPrometheus runs Debian's prometheus (on PATH) with a scrape
// interval of 1 s against the backends' /metrics at targets, with its
// data in a temporary directory, and waits until it is ready. Without the
// binary the test is skipped, or fails with CI=true.
func startPrometheus(t *testing.T, targets ...string) *promServer {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		testserver.Need(t, testserver.NotInstalled("prometheus", "prometheus", err))
	}
	dir := t.TempDir() // removed after the process is stopped (cleanups run last-in first-out)
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: backend
    metrics_path: /metrics
    static_configs:
      - targets: %s
`, quoteList(targets))
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	p := &promServer{t: t, base: "http://127.0.0.1:" + strconv.Itoa(port)}
	p.cmd = exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address=127.0.0.1:"+strconv.Itoa(port),
		"--web.console.templates="+filepath.Join(dir, "consoles"), // none: the test reads the API only
		"--web.console.libraries="+filepath.Join(dir, "console_libraries"),
		"--log.level=warn",
	)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() { p.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("prometheus log:\n%s", p.log())
		}
	})
	for deadline := time.Now().Add(promTimeout); ; time.Sleep(100 * time.Millisecond) {
		select {
		case <-exited:
			t.Fatalf("prometheus exited before it was ready (%v):\n%s", p.cmd.ProcessState, p.log())
		default:
		}
		if resp, err := httpClient.Get(p.base + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready on %s within %v:\n%s", p.base, promTimeout, p.log())
		}
	}
}

// quoteList returns ss as a YAML flow sequence of quoted strings.
func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// query runs an instant query through the HTTP API and returns the value
// of each series of the result, keyed by its labels as Prometheus prints
// them, and the raw answer.
func (p *promServer) query(q string) (map[string]float64, string, error) {
	resp, err := httpClient.Get(p.base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", err
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, string(body), fmt.Errorf("query %q: %v", q, err)
	}
	if r.Status != "success" || r.Data.ResultType != "vector" {
		return nil, string(body), fmt.Errorf("query %q: status %q, result type %q: %s", q, r.Status, r.Data.ResultType, r.Error)
	}
	out := map[string]float64{}
	for _, s := range r.Data.Result {
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return nil, string(body), fmt.Errorf("query %q: value %v: %v", q, s.Value[1], err)
		}
		out[fmt.Sprint(s.Metric)] = v
	}
	return out, string(body), nil
}

// promotions is how many times m became the fleet lock's holder, by its log.
func (m *member) promotions() float64 {
	return float64(strings.Count(m.log(), `msg="orchestrator active"`))
}

// losses is how many times m lost the fleet lock, by its log.
func (m *member) losses() float64 {
	return float64(strings.Count(m.log(), `msg="fleet lock lost: stopping the agents"`))
}

// fence is m's fencing token as its /api/health reports it.
func (m *member) fence() float64 {
	h, _ := m.health()
	return float64(*h.FenceToken)
}

// waitFunc is waitValue with a value that may change (it is read again
// for each poll): the query and want() must agree at one poll.
func (p *promServer) waitFunc(q string, want func() float64) {
	p.t.Helper()
	p.wait(q, want)
}

// waitValue polls q until it returns exactly one series with value want,
// and fails the test after promTimeout with what Prometheus last answered
// and what it says about the scrape target.
func (p *promServer) waitValue(q string, want float64) {
	p.t.Helper()
	p.wait(q, func() float64 { return want })
}

func (p *promServer) wait(q string, wantf func() float64) {
	p.t.Helper()
	var last string
	var want float64
	for deadline := time.Now().Add(promTimeout); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		want = wantf()
		got, raw, err := p.query(q)
		last = raw
		if err != nil {
			last = err.Error()
			continue
		}
		if len(got) == 1 {
			for _, v := range got {
				if v == want {
					return
				}
			}
		}
	}
	targets := ""
	if resp, err := httpClient.Get(p.base + "/api/v1/targets"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		targets = string(b)
	}
	p.t.Fatalf("Prometheus query %s did not give one series = %v within %v.\nlast answer: %s\ntargets: %s",
		q, want, promTimeout, last, targets)
}

// TestE2EPrometheus scrapes the built backend with a real Prometheus and
// reads the series back through the query API: the lock held and the
// instance running; then the PID file is replaced by someone's file, the
// instance loses its lock and drains, and Prometheus records the loss and
// the stopping state.
func TestE2EPrometheus(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	// A long drain keeps /metrics served after the loss, while the test
	// reads Prometheus; the cleanup kills the process.
	b := start(t, launch{dir: dir, port: port, flags: []string{"-agents", "1", "-drain", "60s"}})
	b.waitReady()
	b.must("GET", "/readyz", 200, nil) // a probe runs the database check
	p := startPrometheus(t, "127.0.0.1:"+strconv.Itoa(port))

	p.waitValue(`up{job="backend"}`, 1)
	p.waitValue(`instancelock_lock_held{job="backend",lock="pidfile"}`, 1)
	p.waitValue(`instancelock_lock_losses_total{lock="pidfile"}`, 0)
	p.waitValue(`instancelock_state{state="running"}`, 1)
	p.waitValue(`instancelock_check_success{check="databaseStatus",optional="false",critical="false"}`, 1)
	p.waitValue(`instancelock_check_success{check="databaseFile",critical="true"}`, 1)
	p.waitValue(`count(instancelock_info{instance_id!=""})`, 1)

	replaceWithForeignFile(t, b.pidfile) // it may not overwrite someone's file: lost
	eventually(t, 30*time.Second, "the backend to notice the loss", func() bool {
		return b.lineWith("lock lost") != ""
	})
	p.waitValue(`instancelock_lock_held{lock="pidfile"}`, 0)
	p.waitValue(`instancelock_lock_losses_total{lock="pidfile"}`, 1)
	p.waitValue(`instancelock_state{state="stopping"}`, 1)
	p.waitValue(`instancelock_state{state="running"}`, 0)
}

// TestE2EPrometheusFleet scrapes a fleet of two backends sharing a fleet
// lock (on a real PostgreSQL, then on a real Redis) with a real
// Prometheus: exactly one holds the fleet lock, and Prometheus has its
// fencing token (the one /api/health reports) and its takeovers (the times
// its log says it became active: once, unless a loaded machine made it
// lose and retake the lock); the holder SIGKILLed, the other takes over,
// and Prometheus has the survivor holding with the new, greater token and
// its own takeovers and losses as its log counts them.
func TestE2EPrometheusFleet(t *testing.T) {
	t.Run("postgres", func(t *testing.T) {
		promFleet(t, "-lock", postgresURL(t))
	})
	t.Run("redis", func(t *testing.T) {
		promFleet(t, "-lock", redisURL(t), "-lock-ttl", "3s") // renewals every second, tolerant of a loaded machine
	})
}

func promFleet(t *testing.T, lockFlags ...string) {
	ms := startFleet(t, 2, append(lockFlags, "-agents", "1")...)
	targets := make([]string, len(ms))
	for i, m := range ms {
		targets[i] = "127.0.0.1:" + strconv.Itoa(m.port)
	}
	p := startPrometheus(t, targets...)

	active, fence := waitOneActive(t, ms, "start")
	series := func(name string, m *member) string {
		return fmt.Sprintf(`%s{lock="fleet",instance="127.0.0.1:%d"}`, name, m.port)
	}
	p.waitValue(`count(up{job="backend"} == 1)`, 2)
	p.waitValue(`sum(instancelock_lock_held{lock="fleet"})`, 1)
	p.waitValue(series("instancelock_lock_held", active), 1)
	p.waitFunc(series("instancelock_lock_fencing_token", active), active.fence)
	p.waitFunc(series("instancelock_lock_takeovers_total", active), active.promotions)
	p.waitValue(`count(instancelock_lock_fencing_token{lock="fleet"})`, 1) // the standby has none

	var survivor *member
	for _, m := range ms {
		if m != active {
			survivor = m
		}
	}
	p.waitFunc(series("instancelock_lock_takeovers_total", survivor), survivor.promotions)
	active.signal(syscall.SIGKILL)
	active.waitExit(exitTimeout)
	next, nextFence := waitOneActive(t, []*member{survivor}, "after SIGKILL of the holder")
	if nextFence <= fence {
		t.Fatalf("the survivor holds with fence %d, not above the killed holder's %d", nextFence, fence)
	}
	p.waitValue(series("instancelock_lock_held", next), 1)
	p.waitFunc(series("instancelock_lock_fencing_token", next), next.fence)
	p.waitFunc(series("instancelock_lock_takeovers_total", next), next.promotions)
	p.waitFunc(series("instancelock_lock_losses_total", next), next.losses)
	if n := next.promotions(); n < 1 {
		t.Fatalf("the survivor's log has %v promotions", n)
	}
	p.waitValue(fmt.Sprintf(`up{instance="127.0.0.1:%d"}`, active.port), 0)
}
