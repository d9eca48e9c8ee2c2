package incident_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestModelImportsNoSDK keeps the model the model: a parser or a renderer that imports it must
// not link the AWS SDK or Slack (issue 8).
func TestModelImportsNoSDK(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/keywarden/keywarden/internal/incident").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 5 {
		t.Fatalf("go list -deps listed %d packages; the check would pass on nothing", len(deps))
	}
	for _, d := range deps {
		for _, banned := range []string{"github.com/aws/", "github.com/slack-go/", "/internal/incident/dynamostore"} {
			if strings.Contains(d, banned) {
				t.Errorf("the incident model depends on %s", d)
			}
		}
	}
}
