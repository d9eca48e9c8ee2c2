package startup

import (
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/env"
)

func TestReadSettings(t *testing.T) {
	tests := []struct {
		name          string
		env           map[string]string
		slackRequired bool
		wantErr       []string
		wantSlack     bool
	}{
		{"events only, no Slack", map[string]string{"INCIDENTS_TABLE": "t"}, false, nil, false},
		{"Slack token needs a channel", map[string]string{"INCIDENTS_TABLE": "t", "SLACK_BOT_TOKEN": "xoxb-1"}, false, []string{"SLACK_CHANNEL"}, true},
		{"Slack from Secrets Manager", map[string]string{"INCIDENTS_TABLE": "t", "SLACK_BOT_TOKEN_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:bot", "SLACK_CHANNEL": "#k"}, true, nil, true},
		{"Slack required", map[string]string{}, true, []string{"INCIDENTS_TABLE", "SLACK_BOT_TOKEN", "SLACK_CHANNEL"}, false},
		{"bad flag", map[string]string{"INCIDENTS_TABLE": "t", "SKIP_CLUSTER_AUTOMATED_BACKUPS": "yes"}, false, []string{"SKIP_CLUSTER_AUTOMATED_BACKUPS"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := env.FromMap(tt.env)
			s := ReadSettings(r, tt.slackRequired)
			err := r.Err()
			for _, want := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("got error %v, want it to name %s", err, want)
				}
			}
			if len(tt.wantErr) == 0 && err != nil {
				t.Errorf("got error %v", err)
			}
			if s.BotToken.Set() != tt.wantSlack {
				t.Errorf("bot token set: got %v, want %v", s.BotToken.Set(), tt.wantSlack)
			}
			if strings.Contains(s.BotToken.String(), "xoxb-1") {
				t.Errorf("a token must never print: %s", s.BotToken)
			}
		})
	}
}
