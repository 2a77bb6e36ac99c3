package amqp

import (
	"errors"
	"strings"
	"testing"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
)

// TestManagementEndpoints: where Channels looks for the management API
// and with which credentials and virtual host.
func TestManagementEndpoints(t *testing.T) {
	type ep struct{ base, user, pass, vhost string }
	tests := []struct {
		name string
		url  string
		opts []Option
		want []ep
	}{
		{name: "default", url: "amqp://app:pw@rabbit:5672/", want: []ep{{"http://rabbit:15672", "app", "pw", "/"}}},
		{name: "guest", url: "amqp://localhost", want: []ep{{"http://localhost:15672", "guest", "guest", "/"}}},
		{name: "vhost", url: "amqp://app:pw@rabbit:5673/prod", want: []ep{{"http://rabbit:15672", "app", "pw", "prod"}}},
		{name: "tls", url: "amqps://app:pw@rabbit/", want: []ep{{"https://rabbit:15671", "app", "pw", "/"}}},
		{name: "failover", url: "amqp://a:1@r1/; amqp://b:2@r2/v",
			want: []ep{{"http://r1:15672", "a", "1", "/"}, {"http://r2:15672", "b", "2", "v"}}},
		{name: "config", url: "amqp://app:pw@rabbit/",
			opts: []Option{WithConfig(amqp091.Config{Vhost: "cfg", SASL: []amqp091.Authentication{&amqp091.PlainAuth{Username: "s", Password: "t"}}})},
			want: []ep{{"http://rabbit:15672", "s", "t", "cfg"}}},
		{name: "management URL", url: "amqp://app:pw@rabbit:5674/v", opts: []Option{WithManagementURL("http://mgmt:15674/prefix")},
			want: []ep{{"http://mgmt:15674/prefix", "app", "pw", "v"}}},
		{name: "management URL with user", url: "amqp://app:pw@rabbit/", opts: []Option{WithManagementURL("https://ops:x%2Fy@mgmt:443")},
			want: []ep{{"https://mgmt:443", "ops", "x/y", "/"}}},
		{name: "management URL reset", url: "amqp://app:pw@rabbit/", opts: []Option{WithManagementURL("http://mgmt:1"), WithManagementURL("")},
			want: []ep{{"http://rabbit:15672", "app", "pw", "/"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(tt.url, tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			eps, err := a.mgmtEndpoints()
			if err != nil {
				t.Fatal(err)
			}
			var got []ep
			for _, e := range eps {
				if e.base.User != nil {
					t.Errorf("%s keeps its user info", e.base)
				}
				got = append(got, ep{e.base.String(), e.user, e.pass, e.vhost})
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("got %+v, want %+v", got[i], tt.want[i])
				}
			}
		})
	}
}

func TestWithManagementURLRefused(t *testing.T) {
	for _, u := range []string{"ftp://ops:Secret@mgmt:21", "mgmt:15672", "http://", "http://ops:Secret@%zz"} {
		_, err := New(DefaultURL, WithManagementURL(u))
		if !errors.Is(err, broker.ErrInvalidOption) {
			t.Errorf("%q: %v, want ErrInvalidOption", u, err)
		}
		if err != nil && strings.Contains(err.Error(), "Secret") {
			t.Errorf("%q: %q shows the password", u, err)
		}
	}
}
