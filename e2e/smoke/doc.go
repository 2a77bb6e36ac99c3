// Package smoke produces and consumes one message on each broker with its
// plain Go driver, with no channels code involved, so a broken broker is told
// apart from a broken adapter. It also proves the Node interop peer works
// Node to Node on every broker.
package smoke
