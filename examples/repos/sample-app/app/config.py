"""Settings of sample-app. The values below are FAKE, planted for the COO security-scanner demo."""

AWS_REGION = "eu-west-1"
AWS_ACCESS_KEY_ID = "AKIAQ7EXAMPLEFAKE123"
ANTHROPIC_API_KEY = "sk-ant-api03-FAKEfakeFAKEfake0123456789-demoonly"

DATABASE_HOST = "db.internal"
DATABASE_USER = "app"
password = "hunter2-not-a-real-password"
