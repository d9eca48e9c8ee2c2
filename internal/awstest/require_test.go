package awstest

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"testing"
)

// verdictTB records what Require decided instead of ending the test.
type verdictTB struct {
	testing.TB
	verdict string
}

func (v *verdictTB) Helper() {}
func (v *verdictTB) Skipf(format string, args ...any) {
	v.verdict = "skip: " + fmt.Sprintf(format, args...)
}
func (v *verdictTB) Fatalf(format string, args ...any) {
	v.verdict = "fail: " + fmt.Sprintf(format, args...)
}

func TestRequire(t *testing.T) {
	missing := func() error { return errors.New("not on PATH") }
	present := func() error { return nil }
	tests := []struct {
		name  string
		short bool
		ci    string
		check func() error
		want  string // prefix of the verdict; "" for none
	}{
		{name: "short skips, naming the need", short: true, check: present, want: "skip: needs moto: skipped under -short"},
		{name: "short skips even in CI", short: true, ci: "true", check: missing, want: "skip: needs moto: skipped under -short"},
		{name: "present runs", check: present},
		{name: "no check runs", check: nil},
		{name: "missing skips outside CI", check: missing, want: "skip: needs moto, which is not available: not on PATH"},
		{name: "missing fails in CI", ci: "true", check: missing, want: "fail: needs moto, which is not available in CI: not on PATH"},
	}
	short := flag.Lookup("test.short")
	was := short.Value.String()
	t.Cleanup(func() { _ = short.Value.Set(was) })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CI", tt.ci)
			if err := short.Value.Set(fmt.Sprint(tt.short)); err != nil {
				t.Fatal(err)
			}
			v := &verdictTB{TB: t}
			Require(v, "moto", tt.check)
			_ = short.Value.Set(was)
			if tt.want == "" && v.verdict != "" || !strings.HasPrefix(v.verdict, tt.want) {
				t.Errorf("verdict: got %q, want %q", v.verdict, tt.want)
			}
		})
	}
}
