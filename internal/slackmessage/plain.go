package slackmessage

import (
	"strings"

	"github.com/slack-go/slack"
)

// PlainText is the message of blocks as plain text with the same facts — the header, every
// section's text and fields, the context lines — for when Slack rejects the blocks themselves
// (invalid_blocks, msg_too_long): the incident is then still heard, without its buttons.
func PlainText(blocks []slack.Block) string {
	var lines []string
	add := func(t *slack.TextBlockObject) {
		if t != nil && strings.TrimSpace(t.Text) != "" {
			lines = append(lines, t.Text)
		}
	}
	for _, b := range blocks {
		switch b := b.(type) {
		case *slack.HeaderBlock:
			if b.Text != nil {
				lines = append(lines, "*"+b.Text.Text+"*")
			}
		case *slack.SectionBlock:
			add(b.Text)
			for _, f := range b.Fields {
				add(f)
			}
		case *slack.ContextBlock:
			for _, e := range b.ContextElements.Elements {
				if t, ok := e.(*slack.TextBlockObject); ok {
					add(t)
				}
			}
		case *slack.DividerBlock:
			lines = append(lines, "")
		}
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}
