package main

import (
	"context"
	"errors"
	"io"

	"github.com/keywarden/keywarden/internal/localstack"
)

// runLocalServe runs the local Slack stand-in and Lambda invoke endpoint in the foreground.
func runLocalServe(ctx context.Context, opts localstack.Options, args []string, stdout io.Writer) error {
	return errors.New("local serve: not yet available")
}

// runLocalSlack prints what the Slack stand-in recorded.
func runLocalSlack(ctx context.Context, opts localstack.Options, args []string, stdout io.Writer) error {
	return errors.New("local slack: not yet available")
}
