package proctest

import "testing"

// SkipUnderWine skips the test when this Windows program runs under Wine
// (see WineVersion), with why: a behaviour that Windows has and the Wine
// version lacks. On Windows itself and elsewhere it does nothing, so the
// test runs.
func SkipUnderWine(t testing.TB, why string) {
	t.Helper()
	if v := WineVersion(); v != "" {
		t.Skipf("Wine %s gap: %s", v, why)
	}
}
