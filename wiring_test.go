package instancelock_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/instancelocktest"
)

// TestFieldsSetAfterWiring: wiring a Locker to NewGracefulShutdown and
// NewHealth, and asking for its Path, InstanceID, Info, Err and Lost, fix
// nothing of its configuration: fields set afterwards (Port, and FS, an
// in-memory file system) are what its TryLock uses, so the port is in the
// PID file and nothing is written to the disk at the path. The instance id
// the helpers took is the one in the file.
func TestFieldsSetAfterWiring(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "data", "app.pid") // absolute: the same on both file systems
	lk, err := instancelock.New(path)
	if err != nil {
		t.Fatal(err)
	}
	// Wiring first, as a program's main may do.
	gs := instancelock.NewGracefulShutdown(lk)
	h := instancelock.NewHealth(gs.State(), lk)
	srv := httptest.NewServer(h)
	defer srv.Close()
	id := lk.InstanceID()
	if got := lk.Path(); got != path {
		t.Errorf("Path before the configuration = %q, want %q", got, path)
	}
	if err := lk.Err(); !errors.Is(err, instancelock.ErrNotHeld) {
		t.Errorf("Err before TryLock = %v, want ErrNotHeld", err)
	}
	if _, held := lk.Info(); held || lk.Lost() != nil {
		t.Error("Info or Lost report a holding before TryLock")
	}
	if gs.State().InstanceID() != id || id == "" {
		t.Errorf("the shutdown's State has instance id %q, the Locker %q", gs.State().InstanceID(), id)
	}

	// Then the fields.
	lk.Port = 3000
	mem := instancelocktest.NewMemFS()
	lk.FS = mem
	if err := lk.TryLock(); err != nil {
		t.Fatal(err)
	}
	defer lk.Unlock()

	data, err := mem.ReadFile(path)
	if err != nil {
		t.Fatalf("no PID file on the MemFS set after the wiring: %v", err)
	}
	pl, err := instancelock.ParseProcessLock(data)
	if err != nil || pl.Port != 3000 || pl.InstanceID != id {
		t.Errorf("the PID file on the MemFS: %+v, %v; want port 3000 and instance id %q", pl, err, id)
	}
	if info, held := lk.Info(); !held || info.Port != 3000 {
		t.Errorf("Info = %+v, %v; want port 3000, held", info, held)
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Errorf("the disk was touched: %v in %s (%v)", ents, dir, err)
	}

	// Health, made before the fields were set, answers for this holding
	// (real HTTP): its instance id, and the lock held.
	if err := gs.State().Set(instancelock.StatusRunning); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || body["instanceId"] != id {
		t.Errorf("health: %d %v; want 200 and instance id %q", resp.StatusCode, body, id)
	}

	// A field set after TryLock is not seen (the configuration is fixed):
	// the documented rule, not a silent change of the holding.
	lk.Port = 4000
	if info, _ := lk.Info(); info.Port != 3000 {
		t.Errorf("Port changed after TryLock reached the holding: %d", info.Port)
	}
}
