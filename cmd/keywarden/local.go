package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/keywarden/keywarden/cmd/keywarden/internal/coldstart"
	"github.com/keywarden/keywarden/cmd/keywarden/internal/stack"
)

const localUsage = `usage:
  keywarden local up                            start the local stack in the background (or find it
                                                running) and create the functions' resources
  keywarden local down                          stop what local up started
  keywarden local invoke <LogicalId> <event>    run a function's real bootstrap under the Lambda
                                                Runtime Interface Emulator with the event in the
                                                file <event> ("-" for stdin); the result goes to
                                                stdout, logs to stderr; exit 1 on a function error
  keywarden local demo                          the whole story (make demo): seed a key and Aurora
                                                clusters, disable the key, one incident, the Slack
                                                message, clicks, remediation, resolution, a reminder
  keywarden local demo-org                      the organisation story (make demo-org): a key in a
                                                security account, Aurora on it in two workload
                                                accounts, the DisableKey forwarded to the central
                                                bus, one incident, an approved click, the key
                                                enabled and the clusters started in their accounts
  keywarden local emit <event>                  deliver an event through template.yaml's EventBridge
                                                rules to every function they match
  keywarden local slack [--json]                what the local Slack stand-in received
  keywarden local serve [--config FILE]         the Slack stand-in and Lambda Invoke API in the
                                                foreground (local up runs it in the background)
  keywarden local bench-cold [rounds]           each function's cold start against an aws-lambda-go
                                                hello world, fresh emulator processes, median of
                                                rounds (default 21, at least 9): make bench-cold
  keywarden local help                          this text

Functions: KeyEventFunction, RdsEventFunction, SlackActionFunction, RemediateFunction,
ReconcileFunction. Run from the repository root (or below it).

Environment:
  LOCAL_AWS_PORT        moto's port on 127.0.0.1 (default 4566)
  KEYWARDEN_LOCAL_TTL   moto stops by itself after this long (Go duration, default 4h)
  LOCAL_SERVICES_PORT   the Slack stand-in and Lambda Invoke API (default LOCAL_AWS_PORT+1)
  LOCAL_SLACK_USERGROUPS  user groups the Slack stand-in knows: "S0ONCALL01=U0APPROVR1,U0APPROVR2"
  SLACK_API_URL, SLACK_SIGNING_SECRET, SLACK_CHANNEL, APPROVERS
                        win over events/env.json; values given to local up are kept for
                        later invocations until local down, values given to invoke win over those
`

// runLocal runs the embedded local stack's commands.
func runLocal(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, localUsage)
		return errors.New("local: no subcommand given")
	}
	opts, err := stack.OptionsFromEnv(os.LookupEnv)
	if err != nil {
		return fmt.Errorf("local: %w", err)
	}
	opts.Log = stderr

	switch cmd, rest := args[0], args[1:]; cmd {
	case "up", "down":
		if len(rest) != 0 {
			return fmt.Errorf("local %s takes no arguments", cmd)
		}
		localStack, err := stack.New(opts)
		if err != nil {
			return err
		}
		if cmd == "up" {
			return localStack.Up(ctx)
		}
		return localStack.Down(ctx)
	case "invoke":
		if len(rest) != 2 {
			fmt.Fprint(stderr, localUsage)
			return errors.New("local invoke: want <LogicalId> <event file>")
		}
		return localInvoke(ctx, opts, rest[0], rest[1], stdout)
	case "demo":
		if len(rest) != 0 {
			return errors.New("local demo takes no arguments")
		}
		localStack, err := stack.New(opts)
		if err != nil {
			return err
		}
		return runDemo(ctx, localStack, stdout)
	case "demo-org":
		if len(rest) != 0 {
			return errors.New("local demo-org takes no arguments")
		}
		localStack, err := stack.New(opts)
		if err != nil {
			return err
		}
		return runOrgDemo(ctx, localStack, stdout)
	case "emit":
		return runLocalEmit(ctx, opts, rest, stdout)
	case "serve":
		return runLocalServe(ctx, opts, rest, stdout)
	case "slack":
		return runLocalSlack(ctx, opts, rest, stdout)
	case "bench-cold":
		rounds := coldstart.DefaultRounds
		if len(rest) == 1 {
			if rounds, err = strconv.Atoi(rest[0]); err != nil || rounds < 9 {
				return fmt.Errorf("local bench-cold [rounds]: rounds is a whole number, at least 9")
			}
		}
		localStack, err := stack.New(opts) // finds the repository root
		if err != nil {
			return err
		}
		_, err = coldstart.Run(ctx, coldstart.Options{Dir: localStack.Dir(), Rounds: rounds, Env: os.Environ()}, stdout)
		return err
	case "help", "-h", "--help":
		fmt.Fprint(stdout, localUsage)
		return nil
	}
	fmt.Fprint(stderr, localUsage)
	return fmt.Errorf("local: unknown subcommand %q", args[0])
}

// readEvent reads a JSON event from a file, or from stdin for "-".
func readEvent(cmd, eventFile string) ([]byte, error) {
	var event []byte
	var err error
	if eventFile == "-" {
		event, err = io.ReadAll(os.Stdin)
	} else {
		event, err = os.ReadFile(eventFile)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: read event: %w", cmd, err)
	}
	if !json.Valid(event) {
		return nil, fmt.Errorf("%s: event %s is not valid JSON", cmd, eventFile)
	}
	return event, nil
}

func localInvoke(ctx context.Context, opts stack.Options, logicalID, eventFile string, stdout io.Writer) error {
	event, err := readEvent("local invoke", eventFile)
	if err != nil {
		return err
	}

	// The caller's Slack settings apply to this invocation only; local up is what keeps them.
	callerEnv := opts.CallerEnv
	opts.CallerEnv = nil
	localStack, err := stack.New(opts)
	if err != nil {
		return err
	}
	// Refuse an unknown function before starting anything.
	if _, err := localStack.Function(logicalID); err != nil {
		return err
	}
	// Up finds a running stack in a fraction of a second, and starts one otherwise, so
	// `make invoke` works on a fresh machine too.
	if err := localStack.Up(ctx); err != nil {
		return err
	}
	result, functionErr, err := localStack.Invoke(ctx, logicalID, event, callerEnv)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(stdout, "%s\n", bytes.TrimSpace(result)); err != nil {
		return err
	}
	if functionErr {
		return fmt.Errorf("%s returned an error: %s", logicalID, describeFunctionError(result))
	}
	return nil
}

// describeFunctionError renders Lambda's error object as "errorType: errorMessage".
func describeFunctionError(result []byte) string {
	var e struct {
		Type    string `json:"errorType"`
		Message string `json:"errorMessage"`
	}
	if json.Unmarshal(result, &e) != nil || e.Type == "" {
		return strings.TrimSpace(string(result))
	}
	return e.Type + ": " + e.Message
}
