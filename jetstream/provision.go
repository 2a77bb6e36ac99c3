package jetstream

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	js "github.com/nats-io/nats.go/jetstream"
)

// StreamName is the stream of a channel, as @moleculer/channels names it:
// the channel name with dots (and the other characters a stream name cannot
// hold) turned into underscores. "P.orders.created" -> "P_orders_created".
func StreamName(channel string) string { return tokenName(channel) }

// DurableName is the durable consumer of a group: the group name with dots
// turned into underscores, as @moleculer/channels names it.
func DurableName(group string) string { return tokenName(group) }

func tokenName(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '.', ' ', '\t', '*', '>', '/', '\\':
			return '_'
		}
		return r
	}, s)
}

// subjectMatches reports whether the subject filter (with * and >)
// covers subject.
func subjectMatches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, t := range f {
		if t == ">" {
			return len(s) > i
		}
		if i >= len(s) || (t != "*" && t != s[i]) {
			return false
		}
	}
	return len(f) == len(s)
}

func covers(subjects []string, subject string) bool {
	for _, f := range subjects {
		if subjectMatches(f, subject) {
			return true
		}
	}
	return false
}

// streamFor returns the stream name and subjects of a subject (a channel
// or a dead-letter queue) under o.
func streamFor(subject string, o StreamOptions) (string, []string) {
	name, subjects := StreamName(subject), []string{subject}
	if o.Name != "" {
		name = o.Name
	}
	if len(o.Subjects) > 0 {
		subjects = o.Subjects
	}
	return name, subjects
}

// overlay applies the set fields of o over cfg.
func (o StreamOptions) overlay(cfg js.StreamConfig) js.StreamConfig {
	if o.MaxAge != 0 {
		cfg.MaxAge = o.MaxAge
	}
	if o.MaxMsgs != 0 {
		cfg.MaxMsgs = o.MaxMsgs
	}
	if o.MaxBytes != 0 {
		cfg.MaxBytes = o.MaxBytes
	}
	if o.MaxMsgSize != 0 {
		cfg.MaxMsgSize = o.MaxMsgSize
	}
	if o.Discard != 0 {
		cfg.Discard = o.Discard
	}
	if o.Retention != 0 {
		cfg.Retention = o.Retention
	}
	if o.Storage != 0 {
		cfg.Storage = o.Storage
	}
	if o.Replicas != 0 {
		cfg.Replicas = o.Replicas
	}
	if o.Duplicates != 0 {
		cfg.Duplicates = o.Duplicates
	}
	if o.Configure != nil {
		o.Configure(&cfg)
	}
	return cfg
}

// deadLetterStream returns the options of a dead-letter stream: o, with
// interest retention turned to limits unless o asks for it (a stream with
// interest retention and no consumer acknowledges a message and stores
// nothing: the dead letter would be lost while every step reports
// success). A stream it creates gets the default bounds where o sets none
// (DefaultDeadLetterMaxAge, DefaultDeadLetterMaxMsgs); an existing stream
// keeps its bounds unless o sets them.
func deadLetterStream(o StreamOptions) StreamOptions {
	asked, user := o.Retention, o.Configure
	o.Configure = func(cfg *js.StreamConfig) {
		if cfg.Retention == js.InterestPolicy && asked != js.InterestPolicy {
			cfg.Retention = js.LimitsPolicy
		}
		if user != nil {
			user(cfg)
		}
	}
	o.onCreate = func(cfg *js.StreamConfig) {
		cfg.MaxAge = DefaultDeadLetterMaxAge
		cfg.MaxMsgs = DefaultDeadLetterMaxMsgs
	}
	return o
}

// ensureStream creates the stream that stores subject, or updates it when
// the set options differ from it. It returns the stream name.
func ensureStream(ctx context.Context, j js.JetStream, subject string, o StreamOptions) (string, error) {
	name, _, err := ensureStreamConfig(ctx, j, subject, o)
	return name, err
}

// ensureStreamConfig is ensureStream returning the stream's configuration
// as it is once ensured.
func ensureStreamConfig(ctx context.Context, j js.JetStream, subject string, o StreamOptions) (string, js.StreamConfig, error) {
	name, subjects := streamFor(subject, o)
	for try := 0; ; try++ {
		st, err := j.Stream(ctx, name)
		if errors.Is(err, js.ErrStreamNotFound) {
			base := js.StreamConfig{Name: name, Subjects: subjects}
			if o.onCreate != nil {
				o.onCreate(&base) // defaults of a new stream, under the set options
			}
			cfg := o.overlay(base)
			if _, err = j.CreateStream(ctx, cfg); err == nil {
				return name, cfg, nil
			}
			if errors.Is(err, js.ErrStreamNameAlreadyInUse) && try == 0 {
				continue // created meanwhile by another member: compare with it
			}
			return "", js.StreamConfig{}, fmt.Errorf("channels/jetstream: create stream %q: %w", name, err)
		}
		if err != nil {
			return "", js.StreamConfig{}, fmt.Errorf("channels/jetstream: stream %q: %w", name, err)
		}
		have := st.CachedInfo().Config
		want := o.overlay(have)
		if !covers(want.Subjects, subject) {
			if len(o.Subjects) > 0 {
				return "", js.StreamConfig{}, fmt.Errorf("channels/jetstream: stream %q: its subjects %v do not cover %q", name, want.Subjects, subject)
			}
			want.Subjects = append(slices.Clone(want.Subjects), subject)
		}
		if reflect.DeepEqual(want, have) {
			return name, have, nil
		}
		if want.Storage != have.Storage {
			return "", js.StreamConfig{}, &ConfigError{Kind: "stream", Name: name, Field: "Storage", Have: have.Storage, Want: want.Storage}
		}
		if _, err := j.UpdateStream(ctx, want); err != nil {
			var apiErr *js.APIError
			if errors.As(err, &apiErr) && apiErr.Code == 400 || errors.Is(err, js.ErrStreamNameAlreadyInUse) {
				return "", js.StreamConfig{}, &ConfigError{Kind: "stream", Name: name, Field: diffField(have, want), Have: "the existing configuration", Want: "a change", Err: err}
			}
			return "", js.StreamConfig{}, fmt.Errorf("channels/jetstream: update stream %q: %w", name, err)
		}
		return name, want, nil
	}
}

// diffField names the first field that differs between two configurations.
func diffField(have, want any) string {
	hv, wv := reflect.ValueOf(have), reflect.ValueOf(want)
	for i := range hv.NumField() {
		if !reflect.DeepEqual(hv.Field(i).Interface(), wv.Field(i).Interface()) {
			return hv.Type().Field(i).Name
		}
	}
	return "configuration"
}

// groupDescription is the Description of the consumer of group on subject:
// it keeps the group's name, which the durable name may not (see
// DurableName), for the operations tooling (Channels).
func groupDescription(group, subject string) string {
	return descriptionPrefix + group + descriptionSep + subject
}

const descriptionPrefix, descriptionSep = "channels: group ", " of "

// groupOf is the group of a consumer created by the adapter (its
// Description), or its durable name.
func groupOf(cfg js.ConsumerConfig) string {
	if rest, ok := strings.CutPrefix(cfg.Description, descriptionPrefix); ok {
		if i := strings.LastIndex(rest, descriptionSep); i > 0 {
			return rest[:i]
		}
	}
	return cfg.Durable
}

// consumerConfig is the desired consumer of a group, given the options set
// by the user (zero: not set) and the existing consumer, if any.
func consumerConfig(group, subject string, o ChannelOptions, maxInFlight int, have *js.ConsumerConfig) (js.ConsumerConfig, error) {
	if have == nil {
		if o.DeliverPolicy == deliverUnset && o.portable != deliverUnset {
			o.DeliverPolicy, o.StartTime = o.portable, o.portableTime
		}
		cfg := js.ConsumerConfig{
			Durable:       DurableName(group),
			Description:   groupDescription(group, subject),
			DeliverPolicy: o.DeliverPolicy.native(),
			AckPolicy:     js.AckExplicitPolicy,
			AckWait:       o.AckWait,
			MaxDeliver:    o.maxDeliver(),
			FilterSubject: subject,
			MaxAckPending: o.MaxAckPending,
			ReplayPolicy:  js.ReplayInstantPolicy,
		}
		if cfg.AckWait == 0 {
			cfg.AckWait = DefaultAckWait
		}
		if cfg.MaxAckPending == 0 {
			cfg.MaxAckPending = max(DefaultMaxAckPending, 2*maxInFlight)
		}
		switch o.DeliverPolicy {
		case DeliverByStartSequence:
			cfg.OptStartSeq = o.StartSequence
		case DeliverByStartTime:
			t := o.StartTime
			cfg.OptStartTime = &t
		}
		return cfg, nil
	}
	durable := DurableName(group)
	if have.DeliverSubject != "" {
		return js.ConsumerConfig{}, fmt.Errorf("%w (consumer %q, deliver subject %q)", ErrPushConsumer, durable, have.DeliverSubject)
	}
	cfg := *have
	notAllowed := func(field string, h, w any) error {
		return &ConfigError{Kind: "consumer", Name: durable, Field: field, Have: h, Want: w}
	}
	if have.AckPolicy != js.AckExplicitPolicy {
		return cfg, notAllowed("AckPolicy", have.AckPolicy, js.AckExplicitPolicy)
	}
	if o.DeliverPolicy != deliverUnset {
		if have.DeliverPolicy != o.DeliverPolicy.native() {
			return cfg, notAllowed("DeliverPolicy", have.DeliverPolicy, o.DeliverPolicy.native())
		}
		if o.DeliverPolicy == DeliverByStartSequence && have.OptStartSeq != o.StartSequence {
			return cfg, notAllowed("OptStartSeq", have.OptStartSeq, o.StartSequence)
		}
		if o.DeliverPolicy == DeliverByStartTime && (have.OptStartTime == nil || !have.OptStartTime.Equal(o.StartTime)) {
			return cfg, notAllowed("OptStartTime", have.OptStartTime, o.StartTime.Format(time.RFC3339Nano))
		}
	}
	switch {
	case have.FilterSubject == "" && len(have.FilterSubjects) == 0:
		// A consumer without a filter reads every subject of its stream:
		// on a shared stream, other channels' messages. It is given the
		// channel's filter.
		cfg.FilterSubject = subject
	case have.FilterSubject != subject || len(have.FilterSubjects) > 0:
		return cfg, notAllowed("FilterSubject", have.FilterSubject, subject)
	}
	if o.AckWait != 0 {
		cfg.AckWait = o.AckWait
	}
	if o.MaxAckPending != 0 {
		cfg.MaxAckPending = o.MaxAckPending
	} else if m := max(DefaultMaxAckPending, 2*maxInFlight); cfg.MaxAckPending < m && cfg.MaxAckPending >= 0 {
		cfg.MaxAckPending = m
	}
	// The kit bounds deliveries (MaxDeliveries), then dead-letters; the
	// server's bound is the backstop for what never reaches the kit.
	cfg.MaxDeliver = o.maxDeliver()
	return cfg, nil
}

// ensureConsumer creates the group's durable pull consumer, or updates it
// when the options ask for a change the server allows.
func ensureConsumer(ctx context.Context, j js.JetStream, stream, subject, group string, o ChannelOptions, maxInFlight int) (js.Consumer, error) {
	durable := DurableName(group)
	for try := 0; ; try++ {
		c, err := j.Consumer(ctx, stream, durable)
		if errors.Is(err, js.ErrNotPullConsumer) {
			return nil, fmt.Errorf("%w (consumer %q on stream %q)", ErrPushConsumer, durable, stream)
		}
		if errors.Is(err, js.ErrConsumerNotFound) {
			cfg, _ := consumerConfig(group, subject, o, maxInFlight, nil)
			c, err = j.CreateConsumer(ctx, stream, cfg)
			if err == nil {
				return c, nil
			}
			if try == 0 && (errors.Is(err, js.ErrConsumerExists) || errors.Is(err, js.ErrConsumerNameAlreadyInUse)) {
				continue // created meanwhile by another member
			}
			return nil, fmt.Errorf("channels/jetstream: create consumer %q on stream %q: %w", durable, stream, err)
		}
		if err != nil {
			return nil, fmt.Errorf("channels/jetstream: consumer %q on stream %q: %w", durable, stream, err)
		}
		have := c.CachedInfo().Config
		want, err := consumerConfig(group, subject, o, maxInFlight, &have)
		if err != nil {
			return nil, err
		}
		if reflect.DeepEqual(want, have) {
			return c, nil
		}
		c, err = j.UpdateConsumer(ctx, stream, want)
		if err != nil {
			var apiErr *js.APIError
			if errors.As(err, &apiErr) && apiErr.Code == 400 {
				return nil, &ConfigError{Kind: "consumer", Name: durable, Field: diffField(have, want), Have: "the existing configuration", Want: "a change", Err: err}
			}
			return nil, fmt.Errorf("channels/jetstream: update consumer %q on stream %q: %w", durable, stream, err)
		}
		return c, nil
	}
}
