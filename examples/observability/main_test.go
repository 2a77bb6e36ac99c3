package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRunReportsTheChain(t *testing.T) {
	var out bytes.Buffer
	if err := run("memory://observability-test", true, &out); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{
		"channels.messages.retries          order.created  1",
		"channels.messages.dead_lettered    order.created  1",
		"channels.messages.received         order.charged  2",
		`"Name":"send order.charged"`,
		"process order.charged  kind=consumer parent=send order.charged",
		"send order.charged     kind=producer parent=process order.created",
		`"channels.messages.sent"`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
