package pglock

import (
	"testing"

	"github.com/ad5dec64/instancelock/internal/testserver"
)

// The pooler tests run a real PgBouncer (Debian's pgbouncer package, 1.18
// on Debian 12) that internal/testserver starts on a free port of
// 127.0.0.1 in front of the test server, with one database per pool mode:
// "session", "transaction" and "statement", each a pool of at most 4
// server connections to the test server's postgres database. The
// configuration is stock otherwise: no ignore_startup_parameters. Without
// pgbouncer the tests skip with the reason, unless CI=true, where they
// fail.

// bouncerDSN returns the connection string of the pool with the given
// mode, starting PgBouncer on first use (TestMain stops it).
func bouncerDSN(t testing.TB, mode string) string {
	t.Helper()
	needPG(t)
	b, err := testserver.SharedBouncer()
	testserver.Need(t, err)
	return b.URL(mode)
}
