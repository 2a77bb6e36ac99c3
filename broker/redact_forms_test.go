package broker_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/microchannels/channels/broker"
)

// passwordForms are passwords that url.Parse mistakes for something else
// when left unescaped: digits then "#" (a port, then a fragment), digits
// then "/" (a port, then a path), "?" (a query), "@" (a second userinfo).
var passwordForms = []string{"123#Zq9x", "123/Zq9x", "99?Zq9x", "4#5/Zq9x", "Zq9x@123", "Zq9x", "12%zzZq9x"}

// leaksZq9 reports whether s shows any part of a password above beside
// the leading digits; and any digit run the password starts with, unless
// it is one the URL shows anyway (the port).
func leaksZq9(s string) bool {
	return strings.Contains(s, "Zq9") || strings.Contains(s, "q9x") || strings.Contains(s, "#5") ||
		strings.Contains(s, ":123") || strings.Contains(s, ":99") || strings.Contains(s, ":4#")
}

// TestRedactFormsPerScheme (issue 26 item 6): every scheme, passwords and
// tokens of every awkward form, alone, in a list, quoted in error text: no
// part of the secret is shown by RedactURL, Redact or DisplayURL.
func TestRedactFormsPerScheme(t *testing.T) {
	schemes := []string{"redis", "rediss", "amqp", "amqps", "nats", "tls", "ws", "wss", "kafka"}
	for _, scheme := range schemes {
		for _, pw := range passwordForms {
			forms := []string{
				fmt.Sprintf("%s://user:%s@10.0.0.1:4000", scheme, pw),
				fmt.Sprintf("%s://:%s@10.0.0.1:4000/0?x=1", scheme, pw),
				fmt.Sprintf("%s://user:%s@10.0.0.1:4000,%s://user:%s@10.0.0.2:4000", scheme, pw, scheme, pw),
				fmt.Sprintf("%s://10.0.0.1:4000, %s://user:%s@10.0.0.2:4000", scheme, scheme, pw),
			}
			if scheme == "nats" || scheme == "tls" || scheme == "ws" || scheme == "wss" {
				forms = append(forms, fmt.Sprintf("%s://%s@10.0.0.1:4000", scheme, pw)) // a token
			}
			for _, raw := range forms {
				if got := broker.RedactURL(raw); leaksZq9(got) {
					t.Errorf("RedactURL(%q) = %q", raw, got)
				}
				for _, text := range []string{"dial " + raw + ": refused", `connect "` + raw + `": refused`} {
					if got := broker.Redact(text); leaksZq9(got) {
						t.Errorf("Redact(%q) = %q", text, got)
					}
				}
			}
		}
	}
}

// awkwardForms are the URL forms of TestRedactFormsPerScheme.
func awkwardForms() []string {
	var out []string
	for _, scheme := range []string{"redis", "rediss", "amqp", "amqps", "nats", "tls", "ws", "wss", "kafka"} {
		for _, pw := range passwordForms {
			out = append(out, fmt.Sprintf("%s://user:%s@10.0.0.1:4000", scheme, pw),
				fmt.Sprintf("%s://:%s@10.0.0.1:4000/0?x=1", scheme, pw),
				fmt.Sprintf("%s://user:%s@10.0.0.1:4000,%s://user:%s@10.0.0.2:4000", scheme, pw, scheme, pw),
				fmt.Sprintf("%s://%s@10.0.0.1:4000", scheme, pw))
		}
	}
	return out
}

// TestDisplayURLForms: DisplayURL shows scheme and hosts of every form,
// nothing of the userinfo.
func TestDisplayURLForms(t *testing.T) {
	for _, raw := range awkwardForms() {
		got := broker.DisplayURL(raw)
		if leaksZq9(got) || strings.Contains(got, "@") || strings.Contains(got, "user") || !strings.HasSuffix(got, ":4000") {
			t.Errorf("DisplayURL(%q) = %q", raw, got)
		}
	}
}

func TestDisplayURL(t *testing.T) {
	for in, want := range map[string]string{
		"redis://user:123#abc@127.0.0.1:6379/0":                  "redis://127.0.0.1:6379",
		"nats://u:p@a:4222,nats://u:q@b:4222":                    "nats://a:4222,nats://b:4222",
		"amqps://u:p@h:5671/vhost?heartbeat=5":                   "amqps://h:5671",
		"redis://h:6379?client_name=me@x":                        "redis://h:6379",
		"redis://h:6379/0?password=ab@cd":                        "redis://h:6379",
		"kafka://[::1]:9092":                                     "kafka://[::1]:9092",
		"memory://bus":                                           "memory://bus",
		"not a url":                                              "",
		"redis://h1:7001?addr=h2:7002&addr=h3:7003&password=x@y": "redis://h1:7001",
		"amqp://h/vhost@x":                                       "amqp://x", // an "@" after "/" ends a userinfo
		"nats://12#tok@h:4222":                                   "nats://h:4222",
	} {
		if got := broker.DisplayURL(in); got != want {
			t.Errorf("DisplayURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRedactCredentialsInText (issue 26 item 6): credentials error text
// carries beside URLs.
func TestRedactCredentialsInText(t *testing.T) {
	const jwt = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJqdGkiOiJBQkMifQ.c2lnbmF0dXJl"
	const seed = "SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4"
	tests := []struct{ in, secret string }{
		{`login failed: {"user":"bob","password":"Zq9x-secret"}`, "Zq9x"},
		{`body {"Password" : "Zq9x \"quoted\""}`, "Zq9x"},
		{`{"api_key":"Zq9xKEY","token":12345678}`, "Zq9x"},
		{`{"token":12345678}`, "12345678"},
		{`{"sasl_password":"Zq9x"}`, "Zq9x"},
		{`request headers: Authorization: Bearer Zq9x.abc.def`, "Zq9x"},
		{`authorization:basic Zq9xdXNlcjpwYXNz`, "Zq9x"},
		{`got Bearer Zq9xtoken from cache`, "Zq9x"},
		{`nats: connect with nkey=Zq9xNKEY failed`, "Zq9x"},
		{`nats: jwt=Zq9xJWT seed=Zq9xSEED`, "Zq9x"},
		{`user_jwt=Zq9x&x=1`, "Zq9x"},
		{"nats: bad user jwt " + jwt, "eyJqdGki"},
		{"nkey seed " + seed + " rejected", "SUAIBDPB"},
		{"dial ws://Zq9xTOKEN@10.0.0.1:80/ws: refused", "Zq9x"},
		{"dial wss://Zq9xTOKEN@10.0.0.1:443: refused", "Zq9x"},
		{"servers nats://u:Zq9x1@a:4222,nats://u:Zq9x2@b:4222 unreachable", "Zq9x"},
	}
	for _, tt := range tests {
		if got := broker.Redact(tt.in); strings.Contains(got, tt.secret) {
			t.Errorf("Redact(%q) = %q", tt.in, got)
		}
	}
	// Text without credentials is left as it is.
	for _, s := range []string{`{"user":"bob","count":3}`, "nats: authorization violation", "Basic arithmetic", "Status: OK"} {
		if got := broker.Redact(s); got != s {
			t.Errorf("Redact(%q) = %q", s, got)
		}
	}
}
