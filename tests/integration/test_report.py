"""The nightly review page, checked as a person would: the job writes it at the end of a night's run
from S3 footage, it is logged to the run in MLflow, and Debian's chromium renders it: every preview
loads and the first flagged clip is the night's highest-scoring one."""

import re
from pathlib import Path

import pytest
from helpers import job_config, render_in_browser, write_yaml

from vad.cli import main
from vad.results.sql import run_query
from vad.review.report import run_report
from vad.scoring.job import run_scoring

@pytest.fixture(scope="module")
def night(ray_local, s3, archive, checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("report-night")
    cfg = job_config(s3, archive["uri"], checkpoint["uri"], out)
    cfg = cfg.model_copy(update={"report": cfg.report.model_copy(update={"enabled": True, "top_k": 4})})
    summary = run_scoring(cfg, run_date="2026-11-24")
    return cfg, summary, out


def test_the_nightly_job_writes_the_page_and_logs_it_to_its_mlflow_run(night):
    import mlflow

    from vad.tracking.runs import tracking_uri

    cfg, summary, out = night
    assert summary.report_path and Path(summary.report_path).is_file()
    assert Path(summary.report_path).parent == out / "work" / "reports"
    client = mlflow.tracking.MlflowClient(tracking_uri(cfg.mlflow, cfg.work_dir))  # its own database, whatever ran before
    artifacts = [a.path for a in client.list_artifacts(summary.mlflow_run_id, "report")]
    # once; `vad report` may have added its own page to the run (test_vad_report_finds_the_nights_scoring_run_in_mlflow)
    assert artifacts.count(f"report/{Path(summary.report_path).name}") == 1
    assert set(artifacts) <= {f"report/{Path(summary.report_path).name}", "report/report-2026-11-24.html"}, artifacts


def test_chromium_shows_one_card_per_event_the_top_peak_first_and_the_page_stays_light(night):
    cfg, summary, _ = night
    _, events = run_query(cfg.output.uri, f"SELECT event_id, peak_score, peak_clip_id FROM events WHERE run_id = '{summary.run_id}' "
                                          "ORDER BY peak_score DESC")
    _, flagged = run_query(cfg.output.uri, f"SELECT count(*) FROM scores WHERE run_id = '{summary.run_id}' AND is_anomaly")
    assert len(events) >= 2, "the test night needs events"
    assert len(events) == summary.events < flagged[0][0]  # overlapping flagged clips merged: fewer events than clips
    dom = render_in_browser(Path(summary.report_path))
    loaded = int(re.search(r'data-images-loaded="(\d+)"', dom).group(1))
    broken = int(re.search(r'data-images-broken="(\d+)"', dom).group(1))
    cards = re.findall(r'<article class="event" data-rank="(\d+)" data-score="([^"]+)" data-event-id="([^"]+)"', dom)
    shown = min(4, len(events))
    assert len(cards) == shown and broken == 0
    assert loaded == 2 * shown + 2  # an animated WebP and a key-frame strip per event, a timeline per camera (2)
    assert cards[0][2] == events[0][0] and float(cards[0][1]) == pytest.approx(events[0][1], rel=1e-6)
    assert [float(score) for _, score, _ in cards] == sorted((float(score) for _, score, _ in cards), reverse=True)
    assert len({event_id for *_, event_id in cards}) == shown  # no event twice
    assert 'id="total-events">' + str(len(events)) in dom and 'id="total-flagged">' + str(flagged[0][0]) in dom
    assert Path(summary.report_path).stat().st_size < 2 * 2**20 * shown / 12  # under 2 MB for 12 events, pro rata


def test_a_broken_picture_is_named_on_its_card(night, tmp_path):
    _, summary, _ = night
    page = Path(summary.report_path).read_text()
    damaged = tmp_path / "damaged.html"
    damaged.write_text(re.sub(r'src="data:image/webp;base64,[^"]+"', 'src="data:image/webp;base64,AAAA"', page, count=1))
    dom = render_in_browser(damaged)
    assert 'data-images-broken="1"' in dom and "this picture did not load" in dom


def test_vad_report_cli_for_a_past_night_and_the_messages_when_there_is_nothing(night, tmp_path, capsys):
    cfg, summary, _ = night
    config = write_yaml(cfg, tmp_path / "score.yaml")  # its storage section reaches the footage on S3 for the previews
    code = main(["report", "--results", cfg.output.uri, "--config", str(config), "--date", "2026-11-24", "--run-id", summary.run_id,
                 "--top", "2", "--out", str(tmp_path / "pages"), "--no-mlflow"])
    out = capsys.readouterr().out
    assert code == 0 and "top 2 shown" in out and (tmp_path / "pages" / f"report-2026-11-24-{summary.run_id}.html").is_file()
    assert "could not be cut" not in out, out

    assert main(["report", "--results", str(tmp_path / "empty"), "--out", str(tmp_path / "pages"), "--no-mlflow"]) == 1
    assert "nothing to report" in capsys.readouterr().err
    # a model asked for by name: the page is named by it; a model that scored nothing is said so
    code = main(["report", "--results", cfg.output.uri, "--config", str(config), "--model", summary.model_name, "--top", "1",
                 "--out", str(tmp_path / "pages"), "--no-mlflow"])
    assert code == 0 and (tmp_path / "pages" / f"report-2026-11-24-{summary.model_name}.html").is_file(), capsys.readouterr()
    assert summary.model_name in (tmp_path / "pages" / f"report-2026-11-24-{summary.model_name}.html").read_text()
    assert main(["report", "--results", cfg.output.uri, "--config", str(config), "--model", "vad-none", "--no-mlflow"]) == 1
    assert "no results for model vad-none" in capsys.readouterr().err



def test_a_night_without_flagged_clips_says_so(ray_local, s3, archive, checkpoint, tmp_path):
    from vad.models.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(checkpoint["uri"], s3.storage_config())
    calm = str(tmp_path / "calm.pt")  # the same model with a threshold no clip reaches
    save_checkpoint(calm, loaded.model, version="calm", threshold=1e9, decode=loaded.decode)
    cfg = job_config(s3, f"{archive['uri']}/cam01", calm, tmp_path)
    cfg = cfg.model_copy(update={"mlflow": cfg.mlflow.model_copy(update={"enabled": False})})
    summary = run_scoring(cfg, run_date="2026-11-24")
    page = run_report(cfg.output.uri, out_dir=tmp_path / "pages")
    assert summary.clips > 0 and page.clips == summary.clips and page.flagged == 0 and page.shown == 0
    html = Path(page.path).read_text()
    assert 'id="message"' in html and "No events this night" in html and page.events == 0
    assert "0 flagged" in page.line()


def test_the_nights_errors_are_its_runs_even_under_another_date(night, tmp_path):
    """Errors are written under the run's date, scores under the videos' own: a run on the 30th that
    scored footage of the 24th reports its errors on the 24th's page."""
    from vad.results.ledger import error_row, write_errors

    cfg, summary, _ = night
    bad = f"{cfg.source.uri}/cam01/2026-11-24/broken.mp4"
    write_errors(cfg.output.uri, "2026-11-30", summary.run_id, [error_row(bad, "decode", error_class="CorruptVideo", message="moov atom not found")])
    page = run_report(cfg.output.uri, storage=cfg.storage, date="2026-11-24", run_id=summary.run_id, top_k=1, out_dir=tmp_path)
    html = Path(page.path).read_text()
    before = [e["uri"] for e in summary.errors]  # the run's own errors, if it had any
    assert f'id="total-errors">{len(before) + 1}<' in html and "moov atom not found" in html and "broken.mp4" in html
    cam01 = re.search(r"<tr><td>cam01</td>(.*?)</tr>", html, re.S).group(1)
    expected = 1 + sum("/cam01/" in uri for uri in before)
    # videos, footage (h), clips, flagged, events, events per hour, errors
    assert re.findall(r'<td class="num"[^>]*>([^<]*)</td>', cam01)[6] == str(expected)


def test_vad_report_finds_the_nights_scoring_run_in_mlflow(night, tmp_path, capsys):
    cfg, summary, out = night
    code = main(["report", "--results", cfg.output.uri, "--config", str(write_yaml(cfg, tmp_path / "score.yaml")), "--top", "1",
                 "--out", str(tmp_path), "--work-dir", str(out / "work")])
    printed = capsys.readouterr().out
    assert code == 0 and f"logged to MLflow run {summary.mlflow_run_id}" in printed and "could not be cut" not in printed, printed
