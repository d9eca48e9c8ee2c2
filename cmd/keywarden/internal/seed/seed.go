package localstack

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/keywarden/keywarden/internal/incident"
)

// Resource creates one thing the functions need in the local AWS account. Up runs every
// resource each time it is called, on a fresh or an already running moto, so a Resource must
// accept that its thing already exists.
type Resource func(ctx context.Context, cfg aws.Config) error

// DefaultIncidentsTable is the incidents table's name when env.json names none.
const DefaultIncidentsTable = "keywarden-incidents"

// DefaultResources is the registry of what the functions need locally — the counterpart of
// template.yaml's resources. Add to it when a function gains a dependency (a queue, a secret,
// an EventBridge rule). templatePath is the template whose rules route events: the stack's own,
// so Up loads the same rules that Stack.Router routes by.
func DefaultResources(env EnvFile, templatePath string) []Resource {
	var rs []Resource
	// Every INCIDENTS_TABLE any function is given must exist, or that function fails on moto
	// in a way it never would in AWS.
	for _, table := range env.Values("INCIDENTS_TABLE", DefaultIncidentsTable) {
		rs = append(rs, IncidentsTable(table))
	}
	rs = append(rs, EventRouting(templatePath)) // the template's EventBridge rules, one queue per function
	return rs
}

// IncidentsTable creates the incidents table with the schema the incident store owns.
func IncidentsTable(table string) Resource {
	return func(ctx context.Context, cfg aws.Config) error {
		// CreateTable accepts a table that exists already, as Resource requires.
		if err := incident.CreateTable(ctx, dynamodb.NewFromConfig(cfg), table); err != nil {
			return fmt.Errorf("incidents table: %w", err)
		}
		return nil
	}
}
