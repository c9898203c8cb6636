//go:build linux

package instancelock

import "testing"

func TestParseStatmResident(t *testing.T) {
	for in, want := range map[string]uint64{"123 456 7 8 0 9 0\n": 456, "1 0 0": 0} {
		if got, ok := parseStatmResident([]byte(in)); !ok || got != want {
			t.Errorf("%q: %d %v, want %d", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "123", "123 ", "123 x"} {
		if _, ok := parseStatmResident([]byte(in)); ok {
			t.Errorf("%q accepted", in)
		}
	}
	if rss, ok := readRSS(); !ok || rss < 1<<20 {
		t.Errorf("readRSS() = %d, %v; want this process's resident size", rss, ok)
	}
}
