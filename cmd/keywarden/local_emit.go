package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/keywarden/keywarden/cmd/keywarden/internal/routing"
	"github.com/keywarden/keywarden/cmd/keywarden/internal/stack"
)

const emitUsage = `usage: keywarden local emit [--wait 3s] [--route-only] [--json] <event file | ->

Sends a whole EventBridge event (a file of events/, or "-" for stdin) through template.yaml's
EventBridge rules on the local stack, as AWS would deliver it: PutEvents to the local default
bus, then every function whose rule matched is invoked — its real bootstrap under the Lambda
emulator — with the event as its queue received it. Prints which functions received the event
and each one's result; exit 1 when a function returned an error. An event no rule matches
reaches no function, and that is not an error.

  --wait        how long to wait for deliveries (default 3s)
  --route-only  show which functions receive the event, invoke none
  --json        print [{"function", "event_id", "event", "result", "error"}] instead of text
`

// runLocalEmit delivers an event through the template's EventBridge rules.
func runLocalEmit(ctx context.Context, opts stack.Options, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("local emit", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	wait := fs.Duration("wait", routing.DefaultDeliveryWait, "")
	routeOnly := fs.Bool("route-only", false, "")
	asJSON := fs.Bool("json", false, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, emitUsage)
			return nil
		}
		return fmt.Errorf("local emit: %w\n%s", err, emitUsage)
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("local emit: want one event file\n%s", emitUsage)
	}
	if *wait <= 0 || *wait > 5*time.Minute {
		return fmt.Errorf("local emit: --wait %s: want more than 0 and at most 5m", *wait)
	}
	eventFile := fs.Arg(0)
	event, err := readEvent("local emit", eventFile)
	if err != nil {
		return err
	}

	// As for invoke: the caller's Slack settings apply to these invocations only.
	callerEnv := opts.CallerEnv
	opts.CallerEnv = nil
	localStack, err := stack.New(opts)
	if err != nil {
		return err
	}
	// Up finds a running stack quickly and (re)loads the template's rules, so a changed
	// pattern takes effect on the next emit.
	if err := localStack.Up(ctx); err != nil {
		return err
	}
	results, err := emitEvent(ctx, localStack, event, *wait, *routeOnly, callerEnv)
	if err != nil {
		return fmt.Errorf("local emit: %w", err)
	}
	if err := printEmit(stdout, eventFile, results, *routeOnly, *asJSON); err != nil {
		return err
	}
	var failed []string
	for _, r := range results {
		if r.FunctionErr {
			failed = append(failed, r.Function+": "+describeFunctionError(r.Output))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("local emit: %s", strings.Join(failed, "; "))
	}
	return nil
}

// emitEvent sends event through the stack's EventBridge rules and, unless routeOnly, invokes
// every function it reaches. The stack must be up. The demo can use it to tell its story
// through the same path as a real deployment.
func emitEvent(ctx context.Context, localStack *stack.Stack, event []byte, wait time.Duration, routeOnly bool, env map[string]string) ([]stack.DeliveryResult, error) {
	router := localStack.Router()
	if !routeOnly {
		return localStack.Deliver(ctx, router, event, wait, env)
	}
	cfg := localStack.AWSConfig()
	id, err := router.Put(ctx, cfg, event)
	if err != nil {
		return nil, err
	}
	deliveries, err := router.Collect(ctx, cfg, []string{id}, wait)
	if err != nil {
		return nil, err
	}
	results := make([]stack.DeliveryResult, 0, len(deliveries))
	for _, d := range deliveries {
		results = append(results, stack.DeliveryResult{Delivery: d})
	}
	return results, nil
}

func printEmit(w io.Writer, eventFile string, results []stack.DeliveryResult, routeOnly, asJSON bool) error {
	if asJSON {
		type row struct {
			Function string          `json:"function"`
			EventID  string          `json:"event_id"`
			Event    json.RawMessage `json:"event"`
			Result   json.RawMessage `json:"result,omitempty"`
			Error    bool            `json:"error"`
		}
		rows := make([]row, 0, len(results))
		for _, r := range results {
			var result json.RawMessage
			if len(bytes.TrimSpace(r.Output)) > 0 {
				result = r.Output
				if !json.Valid(result) {
					result, _ = json.Marshal(string(r.Output))
				}
			}
			rows = append(rows, row{Function: r.Function, EventID: r.EventID, Event: r.Event, Result: result, Error: r.FunctionErr})
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	name := filepath.Base(eventFile)
	if eventFile == "-" {
		name = "event"
	}
	if len(results) == 0 {
		_, err := fmt.Fprintf(w, "%s → no function: no rule of template.yaml matches it\n", name)
		return err
	}
	var fns []string
	for _, r := range results {
		fns = append(fns, r.Function)
	}
	if _, err := fmt.Fprintf(w, "%s → %s\n", name, strings.Join(fns, ", ")); err != nil {
		return err
	}
	if routeOnly {
		return nil
	}
	for _, r := range results {
		status := "ok"
		if r.FunctionErr {
			status = "error"
		}
		if _, err := fmt.Fprintf(w, "%s (%s): %s\n", r.Function, status, bytes.TrimSpace(r.Output)); err != nil {
			return err
		}
	}
	return nil
}
