// Package seed creates what keywarden's functions need in the local AWS account — the
// counterpart of template.yaml's resources: the incidents table and the event routing. The
// local stack runs it on every `local up`.
//
// It owns that list; it must not import the rest of the local stack but the event routing it
// loads, nor the functions.
package seed

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/keywarden/keywarden/cmd/keywarden/internal/routing"
	"github.com/keywarden/keywarden/cmd/keywarden/internal/samenv"
	"github.com/keywarden/keywarden/internal/incident/dynamostore"
)

// Resource creates one thing the functions need in the local AWS account. The local stack's Up
// runs every resource each time it is called, on a fresh or an already running moto, so a Resource must
// accept that its thing already exists.
type Resource func(ctx context.Context, cfg aws.Config) error

// DefaultIncidentsTable is the incidents table's name when env.json names none.
const DefaultIncidentsTable = "keywarden-incidents"

// Defaults is the registry of what the functions need locally — the counterpart of
// template.yaml's resources. Add to it when a function gains a dependency (a queue, a secret,
// an EventBridge rule). env is the functions' env-vars file; templatePath is the template
// whose rules route events: the stack's own, so Up loads the same rules the stack routes by.
func Defaults(env samenv.File, templatePath string) []Resource {
	var rs []Resource
	// Every INCIDENTS_TABLE any function is given must exist, or that function fails on moto
	// in a way it never would in AWS.
	for _, table := range env.Values("INCIDENTS_TABLE", DefaultIncidentsTable) {
		rs = append(rs, IncidentsTable(table))
	}
	rs = append(rs, EventRouting(templatePath)) // the template's EventBridge rules, one queue per function
	return rs
}

// EventRouting loads template.yaml's rules into the local EventBridge (see routing.Router);
// templatePath as routing.Router.Template.
func EventRouting(templatePath string) Resource {
	return routing.Router{Template: templatePath}.Load
}

// IncidentsTable creates the incidents table with the schema the incident store owns.
func IncidentsTable(table string) Resource {
	return func(ctx context.Context, cfg aws.Config) error {
		// CreateTable accepts a table that exists already, as Resource requires.
		if err := dynamostore.CreateTable(ctx, dynamodb.NewFromConfig(cfg), table); err != nil {
			return fmt.Errorf("incidents table: %w", err)
		}
		return nil
	}
}
