from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from runbook.config import LocalStorage, S3Storage, load_config, parse_config
from runbook.errors import ConfigError, NotFoundError

ISSUE_EXAMPLE = """
catalog: sqlite:///.runbook/catalog.db
storage: {kind: local, path: .runbook/backups}
retention: {keep_last: 3, daily: 7, weekly: 4, monthly: 12}
targets:
  postgres:
    - name: app
      dsn: postgresql://postgres:${PGPASS}@127.0.0.1:5432/app
      schemas: []
  redis:
    - {name: cache, url: redis://127.0.0.1:6379/0}
  files:
    - {name: config, paths: [/etc/myapp, ./docker-compose.yml]}
"""


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return str(caught.value)


def test_issue_example_parses_with_env_and_resolves_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("PGPASS", "hunter2")
    source = tmp_path / "conf" / "runbook.yaml"
    config = parse_config(ISSUE_EXAMPLE, source=source)
    pg = config.targets.postgres[0]
    assert pg.dsn.get_secret_value() == "postgresql://postgres:hunter2@127.0.0.1:5432/app"
    assert "hunter2" not in repr(config) and "hunter2" not in config.model_dump_json()
    assert isinstance(config.storage, LocalStorage)
    assert config.storage.path == tmp_path / "conf" / ".runbook" / "backups"
    assert config.catalog == f"sqlite:///{tmp_path / 'conf' / '.runbook' / 'catalog.db'}"
    assert config.targets.files[0].paths == [
        Path("/etc/myapp"),
        tmp_path / "conf" / "docker-compose.yml",
    ]
    assert [t.name for t in config.backup_targets()] == ["app", "cache", "config"]
    assert config.retention.grace == timedelta(hours=24)


def test_relative_paths_of_every_section_follow_the_config_file(tmp_path):
    config = parse_config(
        "targets:\n"
        "  logs: [{name: app, paths: ['logs/*.log', /var/log/x.log]}]\n"
        "  http: [{name: api, url: 'https://x', ca_file: certs/ca.pem}]\n"
        "  kubernetes: [{name: k, kubeconfig: kube/config}]\n"
        "  postgres: [{name: db, dsn: 'dbname=x', bin_dir: pg/bin}]\n",
        source=tmp_path / "runbook.yaml",
    )
    assert config.targets.logs[0].paths == [str(tmp_path / "logs/*.log"), "/var/log/x.log"]
    assert config.targets.http[0].ca_file == tmp_path / "certs/ca.pem"
    assert config.targets.kubernetes[0].kubeconfig == tmp_path / "kube/config"
    assert config.targets.postgres[0].bin_dir == tmp_path / "pg/bin"


def test_example_file_in_repo_is_valid(monkeypatch):
    monkeypatch.setenv("APP_DB_PASSWORD", "x")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    config = load_config(Path(__file__).parents[2] / "runbook.example.yaml")
    assert config.targets.postgres[1].schemas == ["production", "experiments_v1", "quarantine"]
    assert config.backup.lock_timeout == timedelta(minutes=10)


def test_env_default_and_dollar_escape(monkeypatch):
    monkeypatch.delenv("NOPE", raising=False)
    config = parse_config("targets: {files: [{name: f, paths: ['${NOPE:-/srv/a}', '/x/$$HOME']}]}")
    assert [str(p) for p in config.targets.files[0].paths] == ["/srv/a", "/x/$HOME"]


def test_missing_env_var_names_field_and_variable(monkeypatch):
    monkeypatch.delenv("DB_URL", raising=False)
    message = error_of("targets:\n  postgres:\n    - {name: app, dsn: '${DB_URL}'}\n")
    assert "targets.postgres[0].dsn" in message and "DB_URL" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("targets: {postgres: [{name: app}]}", "targets.postgres[0].dsn: field required"),
        (
            "targets: {postgres: [{name: app, dns: x, dsn: 'dbname=a'}]}",
            "targets.postgres[0].dns: unknown field",
        ),
        ("storage: {kind: s3}", "storage.bucket: field required"),
        ("storage: {kind: ftp}", "storage: "),
        ("retention: {daily: -1}", "retention.daily:"),
        ("backup: {lock_timeout: soon}", "backup.lock_timeout: expected a duration"),
        ("targets: {redis: [{name: c, url: 'http://x'}]}", "targets.redis[0].url:"),
        ("targets: {files: [{name: Bad Name, paths: [a]}]}", "targets.files[0].name: use lower"),
        ("targets: {files: [{name: f, paths: []}]}", "targets.files[0].paths:"),
        ("timezone: Mars/Olympus", "timezone: unknown timezone"),
        ("catalog: mysql://x", "catalog: expected sqlite"),
        ("storage: {kind: s3, bucket: abc, sse_kms_key_id: k}", "sse_kms_key_id is set"),
    ],
)
def test_errors_name_the_field(text, expected):
    assert expected in error_of(text)


def test_duplicate_target_names_are_rejected():
    message = error_of(
        "targets:\n  postgres: [{name: app, dsn: 'dbname=a'}]\n  files: [{name: app, paths: [x]}]\n"
    )
    assert "targets.files[0].name: 'app' is already used by targets.postgres[0]" in message


def test_bad_dsn_error_never_repeats_the_password():
    message = error_of("targets: {postgres: [{name: a, dsn: 'host=h password=TopSecret dbname'}]}")
    assert "targets.postgres[0].dsn" in message
    assert "TopSecret" not in message


def test_dsn_without_database_is_rejected():
    assert "names no database" in error_of(
        "targets: {postgres: [{name: a, dsn: 'postgresql://u@h:5432'}]}"
    )


def test_invalid_yaml_reports_line():
    message = error_of("catalog: x\n  bad: indent\n")
    assert "mapping values are not allowed here at line 2" in message


def test_missing_file_says_how_to_fix(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml: config file not found" in str(caught.value)
    assert "--config" in str(caught.value)


def test_runbook_config_env_is_the_default(tmp_path, monkeypatch):
    path = tmp_path / "elsewhere.yaml"
    path.write_text("targets: {files: [{name: f, paths: [x]}]}\n")
    monkeypatch.setenv("RUNBOOK_CONFIG", str(path))
    assert load_config().targets.files[0].paths == [tmp_path / "x"]


def test_s3_settings_and_unknown_target_lookup():
    config = parse_config(
        "storage: {kind: s3, bucket: acme, prefix: /runbook/, secret_access_key: SK}\n"
        "targets: {files: [{name: f, paths: [x]}]}\n"
    )
    assert isinstance(config.storage, S3Storage)
    assert config.storage.prefix == "runbook"
    assert "SK" not in repr(config.storage)
    with pytest.raises(NotFoundError, match="unknown backup target 'nope' \\(backup targets: f\\)"):
        config.target("nope")


def test_backup_schedules_group_targets_and_are_validated():
    config = parse_config(
        """
backup: {schedules: {hourly: "0 * * * *"}}
targets:
  postgres: [{name: app, dsn: "postgresql://u@h/db", schedule: hourly}]
  redis: [{name: cache, url: "redis://h:6379/0"}]
  files: [{name: etc, paths: [.], schedule: hourly}]
"""
    )
    assert [t.name for t in config.select_targets(None, schedule="hourly")] == ["app", "etc"]
    assert [t.name for t in config.select_targets(None, schedule="nightly")] == ["cache"]
    assert [t.name for t in config.select_targets(["cache"], schedule="hourly")] == ["cache"]
    with pytest.raises(NotFoundError, match="unknown backup schedule 'weekly'"):
        config.select_targets(None, schedule="weekly")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'backup: {schedules: {hourly: "0 * * *"}}',
            "backup.schedules: hourly: '0 * * *' is not a cron expression",
        ),
        (
            'backup: {schedules: {nightly: "0 1 * * *"}}',
            "'nightly' is prefect.yaml's backup-nightly deployment",
        ),
        (
            "targets: {files: [{name: f, paths: [.], schedule: weekly}]}",
            "targets.files[0].schedule: unknown schedule 'weekly'",
        ),
    ],
)
def test_schedule_mistakes_name_the_field(text, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        parse_config(text)


def test_unset_variables_can_be_collected_instead_of_failing(monkeypatch):
    monkeypatch.delenv("NOT_SET_PW", raising=False)
    text = 'targets: {postgres: [{name: app, dsn: "postgresql://u:${NOT_SET_PW}@h/db"}]}'
    with pytest.raises(ConfigError, match="NOT_SET_PW is not set"):
        parse_config(text)
    unset: list[str] = []
    config = parse_config(text, unset=unset)
    assert unset == ["NOT_SET_PW"] and config.targets.postgres[0].name == "app"
