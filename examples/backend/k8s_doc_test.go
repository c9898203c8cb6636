package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// kubernetesSnippet returns the first ```yaml block of the Kubernetes
// section of docs/operators.md.
func kubernetesSnippet(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../../docs/operators.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n## Kubernetes\n")
	if !ok {
		t.Fatal("docs/operators.md has no \"## Kubernetes\" section")
	}
	_, block, ok := strings.Cut(section, "```yaml\n")
	if !ok {
		t.Fatal("the Kubernetes section of docs/operators.md has no ```yaml block")
	}
	block, _, ok = strings.Cut(block, "\n```")
	if !ok {
		t.Fatal("unterminated ```yaml block in docs/operators.md")
	}
	return block
}

// field returns the first match of re's group 1 in s, failing the test
// when there is none.
func field(t *testing.T, s, what, re string) string {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("the Deployment snippet of docs/operators.md has no %s (looked for %s)", what, re)
	}
	return m[1]
}

// TestKubernetesSnippet checks that the Deployment in docs/operators.md
// matches the backend: its args parse, its port is the one served, the
// probes hit /readyz and /livez of the real routes, the probe timeout
// exceeds the health checks' timeout, and the grace period exceeds the
// drain plus the shutdown deadline.
func TestKubernetesSnippet(t *testing.T) {
	y := kubernetesSnippet(t)

	var args []string
	for _, m := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(field(t, y, "args", `(?s)\bargs:\s*\[(.*?)\]`), -1) {
		args = append(args, m[1])
	}
	cfg, err := parseConfig(args, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatalf("the snippet's args %q do not parse: %v", args, err)
	}
	if cfg.Drain <= 0 {
		t.Errorf("the snippet sets no -drain (args %q); the text explains the drain delay", args)
	}
	if !strings.HasPrefix(cfg.Addr, ":") && !strings.HasPrefix(cfg.Addr, "0.0.0.0:") {
		t.Errorf("-addr %q listens on one address only; the kubelet probes the pod IP", cfg.Addr)
	}
	if !strings.HasPrefix(cfg.PIDFile, field(t, y, "volume mountPath", `mountPath:\s*([^\s,}]+)`)+"/") {
		t.Errorf("-pidfile %s is not on the mounted volume", cfg.PIDFile)
	}
	if port := field(t, y, "containerPort", `containerPort:\s*(\d+)`); port != strconv.Itoa(cfg.Port) {
		t.Errorf("containerPort %s, but -addr %s", port, cfg.Addr)
	}

	grace, _ := strconv.Atoi(field(t, y, "terminationGracePeriodSeconds", `terminationGracePeriodSeconds:\s*(\d+)`))
	if need := cfg.Drain + cfg.ShutdownTimeout + time.Second; time.Duration(grace)*time.Second <= need {
		t.Errorf("terminationGracePeriodSeconds %d is not above drain %v + shutdown timeout %v + 1s", grace, cfg.Drain, cfg.ShutdownTimeout)
	}

	// The probes, through the backend's own routes.
	h := withMetrics(routes(&API{}, probes{
		health: stubProbe{200, "health"}, ready: stubProbe{200, "ready"}, live: stubProbe{200, "live"},
	}), stubProbe{200, "metrics"})
	for _, p := range []struct{ probe, path, body string }{
		{"readinessProbe", "/readyz", "ready"},
		{"livenessProbe", "/livez", "live"},
	} {
		block := field(t, y, p.probe, `(?s)`+p.probe+`:(.*?)(?:\n\s*\w+Probe:|\n\s*volumeMounts:)`)
		if path := field(t, block, p.probe+" path", `path:\s*([^\s,}]+)`); path != p.path {
			t.Errorf("%s on %s, want %s", p.probe, path, p.path)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p.path, nil))
		if rec.Body.String() != p.body {
			t.Errorf("GET %s is not served by the %s handler (got %d %q)", p.path, p.body, rec.Code, rec.Body)
		}
		timeout, _ := strconv.Atoi(field(t, block, p.probe+" timeoutSeconds", `timeoutSeconds:\s*(\d+)`))
		// databaseStatus and fleetLock have checkTimeout, databaseFile
		// (Critical, run by /livez too) the default of Check.Timeout, 2s.
		if longest := max(checkTimeout, 2*time.Second); time.Duration(timeout)*time.Second <= longest {
			t.Errorf("%s timeoutSeconds %d is not above the checks' timeout %v", p.probe, timeout, longest)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Body.String() != "metrics" {
		t.Errorf("GET /metrics is not served on the same handler (got %d %q)", rec.Code, rec.Body)
	}
}
