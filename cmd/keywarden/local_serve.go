package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/keywarden/keywarden/cmd/keywarden/internal/stack"
	"github.com/keywarden/keywarden/internal/slacktest"
)

// runLocalServe runs the local Slack stand-in and Lambda invoke endpoint in the foreground,
// until interrupted or until the stack's TTL has passed. `local up` runs it in the background
// with --config, the options it recorded; by hand it takes them from the environment.
func runLocalServe(ctx context.Context, opts stack.Options, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("local serve", flag.ContinueOnError)
	fs.SetOutput(stdout)
	config := fs.String("config", "", "the options `file` local up recorded (default: from the environment)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("local serve: unexpected arguments %q", fs.Args())
	}
	if *config != "" {
		recorded, err := stack.ReadServicesConfig(*config)
		if err != nil {
			return fmt.Errorf("local serve: %w", err)
		}
		recorded.Log = opts.Log
		opts = recorded
	}
	localStack, err := stack.New(opts)
	if err != nil {
		return fmt.Errorf("local serve: %w", err)
	}
	ttl := opts.TTL
	if ttl <= 0 {
		ttl = stack.DefaultTTL
	}
	// Stop by itself, in the foreground too: a forgotten terminal must not serve for ever.
	ctx, cancel := context.WithTimeout(ctx, ttl)
	defer cancel()
	l, err := net.Listen("tcp", localStack.ServicesAddr())
	if err != nil {
		return fmt.Errorf("local serve: %w (set LOCAL_SERVICES_PORT to a free port)", err)
	}
	if err := stack.Serve(ctx, l, localStack); err != nil {
		return err
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		fmt.Fprintf(stdout, "local serve: stopped after %s\n", ttl)
	}
	return nil
}

// runLocalSlack prints what the Slack stand-in recorded since the local services last started.
func runLocalSlack(_ context.Context, opts stack.Options, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("local slack", flag.ContinueOnError)
	fs.SetOutput(stdout)
	asJSON := fs.Bool("json", false, "print the records as a JSON array")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("local slack: unexpected arguments %q", fs.Args())
	}
	localStack, err := stack.New(opts)
	if err != nil {
		return fmt.Errorf("local slack: %w", err)
	}
	records, err := localStack.SlackRecords()
	if err != nil {
		return fmt.Errorf("local slack: %w", err)
	}
	if *asJSON {
		if records == nil {
			records = []slacktest.Record{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(records)
	}
	if len(records) == 0 {
		_, err := fmt.Fprintf(stdout, "no Slack calls recorded in %s (is the local stack up?)\n", localStack.SlackRecordPath())
		return err
	}
	var b strings.Builder
	for _, r := range records {
		writeSlackRecord(&b, r)
	}
	_, err = io.WriteString(stdout, b.String())
	return err
}

// writeSlackRecord renders one record: a heading line with the method, where and which
// message, then the text, the blocks' texts and the buttons, indented.
func writeSlackRecord(b *strings.Builder, r slacktest.Record) {
	head := []string{fmt.Sprintf("#%d", r.Seq), r.At.Local().Format("15:04:05.000"), r.Method}
	if r.Channel != "" {
		ch := r.Channel
		if r.ChannelName != "" {
			ch = "#" + r.ChannelName + " (" + r.Channel + ")"
		}
		head = append(head, ch)
	}
	if r.TS != "" {
		head = append(head, "ts "+r.TS)
	}
	if r.ThreadTS != "" {
		head = append(head, "thread "+r.ThreadTS)
	}
	if r.User != "" {
		head = append(head, "user "+r.User)
	}
	if r.Usergroup != "" {
		head = append(head, "group "+r.Usergroup)
	}
	if !r.OK {
		head = append(head, "→ error "+r.Error)
	}
	b.WriteString(strings.Join(head, "  "))
	b.WriteByte('\n')
	if r.Text != "" {
		writeIndented(b, "    text: ", r.Text)
	}
	for _, t := range r.BlockTexts() {
		writeIndented(b, "    │ ", t)
	}
	if buttons := r.Buttons(); len(buttons) > 0 {
		labels := make([]string, len(buttons))
		for i, btn := range buttons {
			labels[i] = fmt.Sprintf("[%s] %s", btn.Text, btn.ActionID)
			if btn.Style != "" {
				labels[i] += " (" + btn.Style + ")"
			}
		}
		b.WriteString("    buttons: " + strings.Join(labels, "  ") + "\n")
	}
}

// writeIndented writes text after prefix, its later lines indented to match.
func writeIndented(b *strings.Builder, prefix, text string) {
	pad := strings.Repeat(" ", len([]rune(prefix)))
	if strings.HasSuffix(prefix, "│ ") {
		pad = prefix
	}
	for i, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		if i == 0 {
			b.WriteString(prefix)
		} else {
			b.WriteString(pad)
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
}
