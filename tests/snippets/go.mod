// The module the Go snippets of docs/ run in (tests/docs.rs): standard library only.
module portcullis.test/snippets

go 1.22
