// Command hello is the yardstick of `make bench-cold`: an aws-lambda-go function that does
// nothing, built exactly as keywarden's functions are, so their cold start is measured against
// what the runtime itself costs.
package main

import "github.com/aws/aws-lambda-go/lambda"

func main() {
	lambda.Start(func() (string, error) { return "hello", nil })
}
