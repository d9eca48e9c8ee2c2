// Command keywarden is the operator's side of keywarden: check a key's blast radius before
// touching it, list incidents, and run the whole system on one machine with no AWS account.
//
//	keywarden blast-radius [--json] <key ID | key ARN | alias name | alias ARN>
//	keywarden blast-radius --org [--accounts 111111111111,…] [--role-name keywarden-read] [--json] <key>
//	keywarden incidents [<incident ID>] [--json]
//	keywarden doctor [flags]   (checks the deployment's Slack and AWS set-up; exit 1 on a failure)
//	keywarden local up|down|invoke|emit|slack|serve|demo …
//
// AWS is reached through the SDK's usual configuration; set AWS_ENDPOINT_URL to point it at the
// local stack. INCIDENTS_TABLE names the incidents table (default keywarden-incidents).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage:
  keywarden blast-radius [--json] <key ID | key ARN | alias name | alias ARN>
  keywarden blast-radius --org [--accounts 111111111111,222222222222] [--role-name keywarden-read]
                         [--organization-read-role <role ARN>] [--concurrency 10] [--json] <key>
  keywarden incidents [<incident ID>] [--json]
  keywarden doctor [flags]                                     (see keywarden doctor -h)
  keywarden local up|down|invoke|emit|slack|serve|demo ...   (see keywarden local help)
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		// -h or --help: the flag package printed the usage; asking for it is no failure.
	case err != nil:
		fmt.Fprintln(os.Stderr, "keywarden:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("no command given")
	}
	switch args[0] {
	case "blast-radius":
		return runBlastRadius(ctx, args[1:], stdout)
	case "incidents":
		return runIncidents(ctx, args[1:], stdout)
	case "doctor":
		return runDoctor(ctx, args[1:], stdout)
	case "local":
		return runLocal(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}
