package startup

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
)

// lambdaEnv is what Lambda sets for every function.
var lambdaEnv = map[string]string{
	"AWS_REGION":            "eu-west-1",
	"AWS_ACCESS_KEY_ID":     "ASIAEXAMPLE",
	"AWS_SECRET_ACCESS_KEY": "secret",
	"AWS_SESSION_TOKEN":     "token",
}

func setenv(t *testing.T, env map[string]string) {
	t.Helper()
	for _, k := range []string{"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_MAX_ATTEMPTS", "AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
}

func TestAWSConfigReadsTheLambdaEnvironment(t *testing.T) {
	setenv(t, lambdaEnv)
	cfg, err := AWSConfig(os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Region != "eu-west-1" {
		t.Errorf("Region = %q", cfg.Region)
	}
	creds, err := cfg.Credentials.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if creds.AccessKeyID != "ASIAEXAMPLE" || creds.SecretAccessKey != "secret" || creds.SessionToken != "token" {
		t.Errorf("credentials = %+v", creds)
	}
	if got := cfg.Retryer().MaxAttempts(); got != RetryAttempts {
		t.Errorf("retryer attempts = %d, want %d", got, RetryAttempts)
	}
	if o := dynamodb.NewFromConfig(cfg).Options(); o.BaseEndpoint != nil {
		t.Errorf("no endpoint variable, yet DynamoDB's endpoint is %q", *o.BaseEndpoint)
	}
}

// The local stack points every client at moto and Lambda at its own Invoke API; the SDK's
// clients must read both from the sources AWSConfig gives them.
func TestAWSConfigEndpoints(t *testing.T) {
	tests := []struct {
		name         string
		env          map[string]string
		ddb, secrets string
	}{
		{name: "one for all", env: map[string]string{"AWS_ENDPOINT_URL": "http://moto:5000"}, ddb: "http://moto:5000", secrets: "http://moto:5000"},
		{name: "a service's own wins", env: map[string]string{"AWS_ENDPOINT_URL": "http://moto:5000", "AWS_ENDPOINT_URL_DYNAMODB": "http://ddb:8000"}, ddb: "http://ddb:8000", secrets: "http://moto:5000"},
		{name: "service IDs with spaces", env: map[string]string{"AWS_ENDPOINT_URL_SECRETS_MANAGER": "http://sm:1"}, secrets: "http://sm:1"},
		{name: "ignored when told", env: map[string]string{"AWS_ENDPOINT_URL_DYNAMODB": "http://ddb:8000", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range lambdaEnv {
				env[k] = v
			}
			for k, v := range tc.env {
				env[k] = v
			}
			setenv(t, env)
			cfg, err := AWSConfig(os.LookupEnv)
			if err != nil {
				t.Fatal(err)
			}
			if got := aws.ToString(dynamodb.NewFromConfig(cfg).Options().BaseEndpoint); got != tc.ddb {
				t.Errorf("DynamoDB endpoint %q, want %q", got, tc.ddb)
			}
			if got := aws.ToString(secretsmanager.NewFromConfig(cfg).Options().BaseEndpoint); got != tc.secrets {
				t.Errorf("Secrets Manager endpoint %q, want %q", got, tc.secrets)
			}
		})
	}
}

func TestAWSConfigSaysWhatIsMissing(t *testing.T) {
	setenv(t, map[string]string{"AWS_MAX_ATTEMPTS": "none", "AWS_USE_FIPS_ENDPOINT": "yes", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "1"})
	for _, k := range []string{"AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} {
		t.Setenv(k, "")
	}
	_, err := AWSConfig(os.LookupEnv)
	if err == nil {
		t.Fatal("no error for an empty environment")
	}
	for _, want := range []string{"AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_MAX_ATTEMPTS", "AWS_USE_FIPS_ENDPOINT", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

func TestAWSConfigMaxAttempts(t *testing.T) {
	env := map[string]string{"AWS_MAX_ATTEMPTS": "1"}
	for k, v := range lambdaEnv {
		env[k] = v
	}
	setenv(t, env)
	cfg, err := AWSConfig(os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RetryMaxAttempts != 1 {
		t.Errorf("RetryMaxAttempts = %d, want 1", cfg.RetryMaxAttempts)
	}
}

// A FIPS or dual-stack deployment (GovCloud, FedRAMP) keeps its endpoints: the clients read the
// choice from the config's sources as they would from the SDK's environment source.
func TestAWSConfigFIPSAndDualStack(t *testing.T) {
	env := map[string]string{"AWS_USE_FIPS_ENDPOINT": "true", "AWS_USE_DUALSTACK_ENDPOINT": "TRUE"}
	for k, v := range lambdaEnv {
		env[k] = v
	}
	setenv(t, env)
	cfg, err := AWSConfig(os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	o := dynamodb.NewFromConfig(cfg).Options()
	if o.EndpointOptions.UseFIPSEndpoint != aws.FIPSEndpointStateEnabled || o.EndpointOptions.UseDualStackEndpoint != aws.DualStackEndpointStateEnabled {
		t.Errorf("endpoint options %+v, want FIPS and dual-stack enabled", o.EndpointOptions)
	}
}
