// Package lambdalog makes every log line written during a Lambda invocation carry that
// invocation's request ID, so one invocation's lines can be found together in CloudWatch Logs
// (Lambda's own JSON log format puts the ID only on the platform's lines, not on what the
// function writes to stdout).
//
// The ID comes from the context aws-lambda-go hands the handler (lambdacontext.FromContext):
// lines logged with slog's *Context methods and that context get "request_id"; lines logged
// without it (start-up in main, the CLI) are unchanged. It must not import any keywarden
// package, the AWS SDK or Slack: it is the log handler every function shares.
package lambdalog

import (
	"context"
	"log/slog"

	"github.com/aws/aws-lambda-go/lambdacontext"
)

// RequestIDKey is the key of the request ID on each line.
const RequestIDKey = "request_id"

// Handler adds the Lambda request ID found in a record's context to the record, then passes it
// to the handler it wraps. Under WithGroup the ID is added inside the group, as every attribute
// of that logger is.
type Handler struct {
	next slog.Handler
}

// New wraps next.
func New(next slog.Handler) *Handler { return &Handler{next: next} }

// Enabled reports what the wrapped handler reports.
func (h *Handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle adds request_id when ctx is an invocation's.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if lc, ok := lambdacontext.FromContext(ctx); ok && lc.AwsRequestID != "" {
		// The record is the caller's: slog asks a handler that adds to it to clone it first.
		r = r.Clone()
		r.AddAttrs(slog.String(RequestIDKey, lc.AwsRequestID))
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs keeps the wrapper around the wrapped handler's WithAttrs.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Handler{next: h.next.WithAttrs(attrs)}
}

// WithGroup keeps the wrapper around the wrapped handler's WithGroup.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name)}
}
