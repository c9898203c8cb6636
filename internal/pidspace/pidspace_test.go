package pidspace

import "testing"

func TestParseAndCompare(t *testing.T) {
	host, ok := Parse("linux:b1:4026531836:m1")
	if !ok || host != (Space{"linux", "b1", "4026531836", "m1"}) {
		t.Fatalf("Parse = %+v, %v", host, ok)
	}
	for _, c := range []struct {
		other        string
		sameBoot, ok bool
		earlierBoot  bool
	}{
		{"linux:b1:4026532000:", true, true, false},   // a container of this boot, no machine id
		{"linux:b1:4026531836:m1", true, true, false}, // this very space
		{"linux:b0:4026531836:m1", false, true, true}, // an earlier boot of this machine
		{"linux:b2:4026531836:m2", false, true, false},
		{"linux:b2:4026531836:", false, true, false}, // another boot, machine unknown
		{"darwin:b1::", false, true, false},
		{"windows:::m1", false, true, false},
		{"", false, false, false},
		{"linux:b1", false, false, false},
	} {
		sp, ok := Parse(c.other)
		if ok != c.ok {
			t.Errorf("Parse(%q) ok = %v", c.other, ok)
			continue
		}
		if got := sp.SameBoot(host); got != c.sameBoot {
			t.Errorf("%q SameBoot = %v", c.other, got)
		}
		if got := sp.EarlierBoot(host); got != c.earlierBoot {
			t.Errorf("%q EarlierBoot = %v", c.other, got)
		}
	}
	if sp, ok := FromStartToken("linux:b1:12345"); !ok || !sp.SameBoot(host) {
		t.Errorf("FromStartToken = %+v, %v", sp, ok)
	}
	for _, tok := range []string{"", "darwin:1:2", "linux::5", "linux:b1"} {
		if _, ok := FromStartToken(tok); ok {
			t.Errorf("FromStartToken(%q) ok", tok)
		}
	}
	if (Space{OS: "windows"}).SameBoot(Space{OS: "windows"}) {
		t.Error("an unknown boot is the same boot")
	}
}
