package broker_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/microchannels/channels/broker"
)

func TestRedactURL(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"password", "redis://user:secret@host:6379/0", "redis://user:xxxxx@host:6379/0"},
		{"password only", "amqps://:secret@host", "amqps://:xxxxx@host"},
		{"user only is kept", "amqp://guest@host", "amqp://guest@host"},
		{"nats token", "nats://secret@host:4222", "nats://xxxxx@host:4222"},
		{"tls token", "tls://secret@host:4222", "tls://xxxxx@host:4222"},
		{"query params", "kafka://h:9092?sasl_password=secret&password=secret&pass=secret&token=secret&client=x",
			"kafka://h:9092?sasl_password=xxxxx&password=xxxxx&pass=xxxxx&token=xxxxx&client=x"},
		{"no credentials", "memory://bus", "memory://bus"},
		{"bad escape", "redis://:s3cr%zz@127.0.0.1:6379", "redis://:xxxxx@127.0.0.1:6379"},
		{"bad port", "redis://user:secret/x@host", "redis://user:xxxxx@host"},
		{"space", "rediss://user:sec ret@host:1", "rediss://user:xxxxx@host:1"},
		{"fragment char", "amqp://u:sec#ret@host", "amqp://u:xxxxx@host"},
		{"bad token", "nats://sec%zz@host", "nats://xxxxx@host"},
		{"bad query", "kafka://h:1?password=s%zz&x=1", "kafka://h:1?password=xxxxx&x=1"},
		{"no scheme", "host:1?token=abc", "host:1?token=xxxxx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := broker.RedactURL(tt.in); got != tt.want {
				t.Fatalf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestRedactText(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"url in text", `dial redis://user:secret@host:6379/0 failed`, `dial redis://user:xxxxx@host:6379/0 failed`},
		{"url.Parse error", `parse "redis://:s3cr%zz@h:1": invalid URL escape "%zz"`, `parse "redis://:xxxxx@h:1": invalid URL escape "xxxxx"`},
		{"quoted with space", `parse "redis://u:a b@h": net/url: invalid userinfo`, `parse "redis://u:xxxxx@h": net/url: invalid userinfo`},
		{"port error", `parse "redis://u:secret/x@h": invalid port ":secret" after host`, `parse "redis://u:xxxxx@h": invalid port "xxxxx" after host`},
		{"key=value", `auth failed: password=hunter2 user=bob`, `auth failed: password=xxxxx user=bob`},
		{"repeated secret", `connect amqp://u:hunter2@h (password hunter2)`, `connect amqp://u:xxxxx@h (password xxxxx)`},
		{"nothing", `plain error`, `plain error`},
		{"password cut at #", `parse "kafka://user:Hun": invalid port ":Hun" after host`, `parse "kafka://user:xxxxx": invalid port "xxxxx" after host`},
		{"host and port kept", `dial tcp redis://127.0.0.1:6379/0: refused`, `dial tcp redis://127.0.0.1:6379/0: refused`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := broker.Redact(tt.in); got != tt.want {
				t.Fatalf("Redact(%q)\n = %q\nwant %q", tt.in, got, tt.want)
			}
		})
	}
	if got := broker.Redact(`NOAUTH: wrong password "hunter2"`, "redis://:hunter2@h"); strings.Contains(got, "hunter2") {
		t.Fatalf("known URL secret kept: %q", got)
	}
}

func TestInvalidURLError(t *testing.T) {
	raw := "redis://user:hunter2/x@host"
	_, perr := url.Parse(raw)
	err := broker.InvalidURLError(broker.ErrInvalidOption, "redis", raw, perr)
	if !errors.Is(err, broker.ErrInvalidOption) || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("err = %v", err)
	}
	if errors.Unwrap(err) != broker.ErrInvalidOption {
		t.Fatalf("the parse error (which holds the URL) must not be wrapped: %v", errors.Unwrap(err))
	}
}
