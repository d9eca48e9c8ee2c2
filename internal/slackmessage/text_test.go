package slackmessage

import (
	"regexp"
	"testing"
)

// FuzzIsID holds the hand-written ID check to the formats written as regular expressions.
func FuzzIsID(f *testing.F) {
	for _, s := range []string{"U024BE7LH", "W012A3CDE", "S0614TZR7", "C0123456789", "G01", "D0ABCDEFGH", "u024be7lh", "U", "", "CÄ12345678", "U0\n"} {
		f.Add(s)
	}
	specs := []struct {
		prefixes string
		min, max int
		re       *regexp.Regexp
	}{
		{"UW", 2, 0, regexp.MustCompile(`^[UW][A-Z0-9]{2,}$`)},
		{"CGD", 8, 0, regexp.MustCompile(`^[CGD][A-Z0-9]{8,}$`)},
		{"UWS", 8, 20, regexp.MustCompile(`^[UWS][A-Z0-9]{8,20}$`)},
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, sp := range specs {
			if got, want := IsID(s, sp.prefixes, sp.min, sp.max), sp.re.MatchString(s); got != want {
				t.Fatalf("IsID(%q, %q, %d, %d) = %v, want %v (%s)", s, sp.prefixes, sp.min, sp.max, got, want, sp.re)
			}
		}
	})
}
