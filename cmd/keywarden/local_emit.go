package main

import (
	"context"
	"errors"
	"io"

	"github.com/keywarden/keywarden/internal/localstack"
)

// runLocalEmit delivers an event through the template's EventBridge rules.
func runLocalEmit(ctx context.Context, opts localstack.Options, args []string, stdout io.Writer) error {
	return errors.New("local emit: not yet available")
}
