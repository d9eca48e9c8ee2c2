package stack

import (
	"context"
	"encoding/json"
	"path/filepath"
	"time"

	"github.com/keywarden/keywarden/cmd/keywarden/internal/routing"
)

// DeliveryResult is what one function did with one delivered event.
type DeliveryResult struct {
	routing.Delivery
	// Output is the function's result; when FunctionErr is set, Lambda's error object.
	Output      json.RawMessage
	FunctionErr bool
}

// Router returns the router of this stack's template.yaml with the default prefix: the one
// seed.Defaults loads.
func (s *Stack) Router() routing.Router {
	return routing.Router{Template: filepath.Join(s.opts.Dir, "template.yaml")}
}

// Deliver sends event through r's rules on the local EventBridge and invokes every function it
// reaches with the event as delivered, one after the other in logical-ID order, as Invoke does
// (env as there). It returns the deliveries and results; none when no rule matched. Call Up
// (with r loaded) first.
func (s *Stack) Deliver(ctx context.Context, r routing.Router, event []byte, wait time.Duration, env map[string]string) ([]DeliveryResult, error) {
	cfg := s.AWSConfig()
	id, err := r.Put(ctx, cfg, event)
	if err != nil {
		return nil, err
	}
	deliveries, err := r.Collect(ctx, cfg, []string{id}, wait)
	if err != nil {
		return nil, err
	}
	results := make([]DeliveryResult, 0, len(deliveries))
	for _, d := range deliveries {
		out, functionErr, err := s.Invoke(ctx, d.Function, d.Event, env)
		if err != nil {
			return results, err
		}
		results = append(results, DeliveryResult{Delivery: d, Output: out, FunctionErr: functionErr})
	}
	return results, nil
}
