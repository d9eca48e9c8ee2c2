package stack

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keywarden/keywarden/internal/template"
)

// TestTemplateFunctions: the local stack runs exactly template.yaml's functions, from their
// folders, with the deployed timeout, so `make invoke` and `make demo` exercise what AWS runs.
func TestTemplateFunctions(t *testing.T) {
	tpl, err := template.Load("../../../../template.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	got := map[string]string{}
	for _, f := range tpl.Functions() {
		got[f.LogicalID] = f.CodeURI
	}
	if diff := cmp.Diff(Functions(), got); diff != "" {
		t.Errorf("functions: logical ID → CodeUri (-stack.Functions +template):\n%s", diff)
	}
	fn, _ := tpl.Globals["Function"].(map[string]any)
	if timeout, _ := fn["Timeout"].(int); time.Duration(timeout)*time.Second != DefaultFunctionTimeout {
		t.Errorf("Globals.Function.Timeout = %v, want DefaultFunctionTimeout (%s): the local stack runs functions with the deployed limit",
			fn["Timeout"], DefaultFunctionTimeout)
	}
}
