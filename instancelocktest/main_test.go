package instancelocktest

import (
	"os"
	"testing"

	"github.com/ad5dec64/instancelock/internal/proctest"
)

// helpers are the child processes the tests start (proctest.Command).
var helpers = map[string]func(){}

func TestMain(m *testing.M) {
	proctest.RunHelper("INSTANCELOCKTEST_HELPER", helpers)
	os.Exit(m.Run())
}
