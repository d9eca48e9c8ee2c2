package samenv

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	got, err := Parse([]byte(`{"Parameters":{"A":"a","N":3,"B":false,"Z":null},"Fn":{"A":"fn"}}`))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if diff := cmp.Diff(map[string]string{"A": "fn", "N": "3", "B": "false", "Z": ""}, got.For("Fn")); diff != "" {
		t.Errorf("For(Fn) (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"A": "a", "N": "3", "B": "false", "Z": ""}, got.For("Other")); diff != "" {
		t.Errorf("For(Other) (-want +got):\n%s", diff)
	}

	for _, bad := range []string{`[]`, `{"Parameters":[]}`, `{"Parameters":{"A":{"x":1}}}`, `{"Parameters":{"A":[1]}}`, `not json`} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%s): got nil error, want one", bad)
		}
	}

	if env, err := Read("testdata/no-such-file.json"); err != nil || len(env) != 0 {
		t.Errorf("Read(missing) = %v, %v; want empty, nil", env, err)
	}
}

func TestValues(t *testing.T) {
	env := File{
		"Parameters": {"INCIDENTS_TABLE": "global"},
		"B":          {"INCIDENTS_TABLE": "b"},
		"A":          {"INCIDENTS_TABLE": "global"},
		"C":          {"OTHER": "x"},
	}
	if diff := cmp.Diff([]string{"global", "b"}, env.Values("INCIDENTS_TABLE", "fallback")); diff != "" {
		t.Errorf("Values (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"fallback"}, File{}.Values("INCIDENTS_TABLE", "fallback")); diff != "" {
		t.Errorf("Values of an empty file (-want +got):\n%s", diff)
	}
}
