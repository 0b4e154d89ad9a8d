<?php

declare(strict_types=1);

namespace AsyncEngine\Tests\SilverStripe;

use AsyncEngine\Engine;
use AsyncEngine\Tests\Support\Http;

/**
 * The SilverStripe module through a real server, with silverstripe/crontask
 * and symbiote/silverstripe-queuedjobs installed: tasks deferred from pages
 * run through self-requests and write through the ORM; QueuedJobs start
 * without their queue runner; `sake dev/cron` kicks; outsiders get 403.
 */
abstract class SilverStripeDispatchTestCase extends SilverStripeTestCase
{
    /** The SAPI task requests run under. */
    abstract protected function sapi(): string;

    public function testTaskDeferredFromAPageRunsThroughASelfRequestAndWritesThroughTheOrm(): void
    {
        $id = $this->page('/async-test/defer?title=page-task');
        $task = $this->waitForState($id, 'done');
        $this->assertSame(['/_async/run', 'App\WriteRecordTask', ['title' => 'page-task', 'fail' => false], 1],
            [$task['endpoint'], $task['task'], $task['args'], $task['attempt']]);
        $this->assertSame("task $id via " . $this->sapi(), self::$site->record('page-task'));
    }

    public function testFailingTaskDiesWithItsErrorAndTheBuildTaskShowsRetriesAndPurgesIt(): void
    {
        $id = $this->page('/async-test/defer?title=doomed&fail=1&attempts=1');
        $task = $this->waitForState($id, 'dead');
        $this->assertStringStartsWith('DomainException: refusing to write doomed in ', $task['last_error']);
        $this->assertNull(self::$site->record('doomed'));

        [$code, $out] = self::$site->sake('dev/tasks/async-engine');
        $this->assertSame(0, $code, $out);
        $this->assertMatchesRegularExpression('/Tasks: \d+ queued, \d+ running, \d+ done, 1 dead, \d+ cancelled/', $out);
        $this->assertStringContainsString("$id  /_async/run  App\\WriteRecordTask  attempts 1", $out);
        $this->assertStringContainsString('DomainException: refusing to write doomed', $out);

        [, $out] = self::$site->sake('dev/tasks/async-engine', "retry=$id");
        $this->assertStringContainsString('Requeued 1 dead task(s)', $out);
        $this->waitForState($id, 'dead'); // it fails again, through a new self-request
        $this->assertSame(1, Engine::status($id)['attempt']);

        [, $out] = self::$site->sake('dev/tasks/async-engine', 'purge=bogus');
        $this->assertStringContainsString('purge must be "finished" or "all", got "bogus": nothing purged', $out);
        $this->assertNotNull(Engine::status($id), 'a bad purge argument purges nothing');
        [, $out] = self::$site->sake('dev/tasks/async-engine', 'purge=all');
        $this->assertMatchesRegularExpression('/Purged [1-9]\d* done, cancelled and dead task\(s\)/', $out);
        $this->assertStringContainsString('No dead tasks.', $out);
        $this->assertNull(Engine::status($id));
    }

    public function testQueuedJobsStartThroughASelfRequestWithoutTheQueueRunner(): void
    {
        $now = $this->page('/async-test/queuejob?title=job-now');
        $later = $this->page('/async-test/queuejob?title=job-later&delay=2');
        // 30 s: a run that met a locked database retries after its backoff (1 s, 2 s, 4 s, ...).
        $this->assertNotNull(self::$site->waitForRecord('job-now', 30), self::$server->log() . "\nengine: "
            . json_encode([Engine::stats(), Engine::tasks('done', 10), Engine::tasks('queued', 10), Engine::tasks('running', 10)])
            . "\njobs: " . json_encode(self::$site->query('SELECT ID, JobStatus, StartAfter, JobTitle FROM QueuedJobDescriptor')));
        $this->assertSame('queuedjob via ' . $this->sapi(), self::$site->record('job-now'));
        $this->assertSame('queuedjob via ' . $this->sapi(), self::$site->waitForRecord('job-later'));
        $jobs = $this->waitForJobsComplete((int) $now, (int) $later);
        $this->assertSame(['Complete', 'Complete'], array_column($jobs, 'JobStatus'), json_encode($jobs));
        // Both are 'Y-m-d H:i:s' strings. Not a wall-clock check of the record: job-now may meet
        // the database's write lock and wait out a retry's backoff past job-later's time.
        $this->assertGreaterThanOrEqual($jobs[1]['StartAfter'], $jobs[1]['JobStarted'], 'not started before its StartAfter');
        $this->assertStringContainsString('record written', $jobs[0]['SavedJobMessages'], 'QueuedJobs kept its own log');
    }

    public function testAQueuedJobThatCannotTakeItsLockIsRetriedNotLost(): void
    {
        $id = (int) $this->page('/async-test/queuejob?title=job-locked&delay=2');
        // Another process holds the site database's write lock when the job is due: QueuedJobs'
        // job lock (a read transaction that then writes) fails at once, and QueuedJobs only logs it.
        $failed = $this->holdingTheSiteLock(fn (): array => array_values(array_filter(Engine::tasks('queued', 50),
            fn (array $task): bool => ($task['args']['job'] ?? null) === $id && $task['last_error'] !== null)), 0.05);
        $this->assertNotEmpty($failed, 'the run that met the lock failed its task: '
            . json_encode([Engine::tasks('done', 10), Engine::tasks('queued', 10)]) . "\n" . self::$server->log());
        $this->assertStringContainsString("QueuedJobs job $id did not start", $failed[0]['last_error']);
        $this->assertSame('queuedjob via ' . $this->sapi(), self::$site->waitForRecord('job-locked', 30), self::$server->log());
        $this->assertSame(['Complete'], array_column($this->waitForJobsComplete($id), 'JobStatus'));
    }

    public function testAQueuedJobWhoseLockIsBusyForAMomentStartsInTheSameRequest(): void
    {
        $id = (int) $this->page('/async-test/queuejob?title=job-brief-lock&delay=2');
        // Released 0.1 s after the task started: its first try of the job lock meets the
        // write lock, a later try in the same request (0.2, 0.6, 1.2 s on, as the test
        // app's config says) gets it.
        $running = $this->holdingTheSiteLock(fn (): array => array_filter(Engine::tasks('running', 50),
            fn (array $task): bool => ($task['args']['job'] ?? null) === $id), 0.01, 0.1);
        $this->assertNotEmpty($running, 'the job\'s task started: ' . self::$server->log());
        $this->assertSame('queuedjob via ' . $this->sapi(), self::$site->waitForRecord('job-brief-lock', 30), self::$server->log());
        $task = $this->waitForState(array_values($running)[0]['id'], 'done');
        $this->assertSame([1, null], [$task['attempt'], $task['last_error']], 'no failed attempt');
        $this->assertSame(['Complete'], array_column($this->waitForJobsComplete($id), 'JobStatus'));
    }

    public function testRequestsFromOutsideAreForbiddenAndChangeNothing(): void
    {
        $id = $this->page('/async-test/defer?title=untouched&delay=3600');
        $before = Engine::status($id);
        $forged = [
            'X-Async-Engine-Slot' => str_repeat('a', 32),
            'X-Async-Engine-Time' => (string) time(),
            'X-Async-Engine-Signature' => str_repeat('0', 64),
        ];
        foreach ([['/_async/run', [], 'GET'], ['/_async/run', [], 'POST'], ['/_async/run', $forged, 'POST'],
            ['/_async/run', ['Host' => 'evil.example'] + $forged, 'POST'], ['/_async', [], 'GET']] as [$path, $headers, $method]) {
            [$status, $body] = self::$server->request($path, $headers, $method === 'POST' ? 'POST' : null);
            $this->assertSame(403, $status, "$method $path " . json_encode($headers) . ": $body");
        }
        $this->assertSame($before, Engine::status($id));
        $this->assertSame(0, Engine::stats()['in_flight']);
    }

    public function testStatusPageIsForAdministratorsAndItsButtonsNeedTheSecurityToken(): void
    {
        $id = $this->page('/async-test/defer?title=status-dead&fail=1&attempts=1');
        $this->waitForState($id, 'dead');
        [$status, , $headers] = $this->browse('/_async/status');
        $this->assertSame(302, $status, 'anonymous: to the login form');
        $this->assertStringContainsString('/Security/login?BackURL=', $headers['location'] ?? '');
        [$status] = $this->browse('/_async/status?format=json');
        $this->assertSame(302, $status);

        self::$site->setEnv('SS_DEFAULT_ADMIN_USERNAME', 'admin');
        self::$site->setEnv('SS_DEFAULT_ADMIN_PASSWORD', 'correct-horse-battery');
        [, $login] = $this->browse('/Security/login');
        $this->assertSame(1, preg_match('/name="SecurityID" value="([^"]+)"/', $login, $m), $login);
        [$status] = $this->browse('/Security/login/default/LoginForm', ['Email' => 'admin',
            'Password' => 'correct-horse-battery', 'SecurityID' => $m[1], 'action_doLogin' => 'Log in']);
        $this->assertSame(302, $status, 'logged in');

        [$status, $html] = $this->browse('/_async/status');
        $this->assertSame(200, $status, $html);
        $this->assertMatchesRegularExpression('~<b data-count="dead">[1-9]\d*</b>~', $html);
        $this->assertStringContainsString("data-id=\"$id\" data-state=\"dead\"", $html);
        $this->assertStringContainsString('DomainException: refusing to write status-dead', $html);
        [$status, $json] = $this->browse('/_async/status?format=json');
        $this->assertSame(200, $status);
        $data = json_decode($json, true);
        $this->assertTrue($data['authorised']);
        $this->assertSame($id, $data['dead'][0]['id']);
        $this->assertSame(['title' => 'status-dead', 'fail' => true], $data['dead'][0]['args']);

        $this->assertSame(1, preg_match('/name="SecurityID" value="([^"]+)"/', $html, $m));
        [$status] = $this->browse('/_async/status', ['action' => 'cancel', 'id' => $id]);
        $this->assertSame(400, $status, 'no security token');
        $this->assertSame('dead', Engine::status($id)['state']);
        [$status, , $headers] = $this->browse('/_async/status', ['action' => 'cancel', 'id' => $id, 'SecurityID' => $m[1]]);
        $this->assertSame(303, $status);
        $this->assertStringContainsString('msg=Task+' . $id . '+cancelled.', $headers['location']);
        $this->assertSame('cancelled', Engine::status($id)['state']);
    }

    public function testDevCronKicksTasksThatNothingElseWouldStart(): void
    {
        // Deferred on the command line (base URL from SS_BASE_URL), due in 1 s;
        // the CLI process is gone by then, and the server was restarted: none
        // of its workers has used the engine, so none polls the queue.
        self::$server->stop();
        self::$server->start();
        [$code, $out] = self::$site->sake('dev/tasks/defer-test', 'title=cron-task', 'delay=1');
        $this->assertSame(0, $code, $out);
        $this->assertMatchesRegularExpression('/deferred ([0-9A-Z]{26})/', $out);
        preg_match('/deferred ([0-9A-Z]{26})/', $out, $m);
        usleep(2500000);
        $this->assertSame('queued', Engine::status($m[1])['state'], 'due, but nothing started it');

        [$code, $out] = self::$site->sake('dev/cron');
        $this->assertSame(0, $code, $out);
        $this->assertStringContainsString('AsyncEngine\SilverStripe\KickCronTask will start now', $out);
        $this->assertStringContainsString('async-engine: kick sent 1 task request(s)', $out);
        $this->waitForState($m[1], 'done');
        $this->assertSame("task {$m[1]} via " . $this->sapi(), self::$site->record('cron-task'));
    }

    public function testACronTaskRunsEveryMinuteThroughTheEngineWithoutACrontab(): void
    {
        // dev/build brings the engine's schedules in line with the manifest's CronTasks.
        self::$site->setEnv('ASYNC_TEST_CRON', '* * * * *');
        $build = self::$site->devBuild();
        $schedules = array_column(Engine::schedules(), null, 'name');
        $this->assertArrayHasKey('crontask:App\MinuteCronTask', $schedules, $build);
        $this->assertArrayNotHasKey('crontask:AsyncEngine\SilverStripe\KickCronTask', $schedules, 'the kick stays with cron');
        $schedule = $schedules['crontask:App\MinuteCronTask'];
        $this->assertSame(['* * * * *', '/_async/run', 'crontask', ['class' => 'App\MinuteCronTask']],
            [$schedule['when'], $schedule['endpoint'], $schedule['task'], $schedule['args']]);
        // Any page view: the worker that served it watches the queue from then on.
        self::$server->stop();
        self::$server->start();
        [$status] = self::$server->request('/Security/login');
        $this->assertSame(200, $status);
        // Then no traffic, no crontab, no sake dev/cron until the minute has run.
        $minute = $schedule['next_at'];
        $this->assertLessThanOrEqual(60.0, $minute - microtime(true));
        if ($minute - microtime(true) < 3) {
            $minute += 60; // too close to tell "on time" from "caught up": watch the next one
        }
        $title = 'cron ' . date('H:i', (int) $minute);
        usleep((int) (max(0.0, $minute - microtime(true)) * 1e6) + 1500000);
        $this->assertSame($this->sapi(), self::$site->record($title), 'the minute ran through the server' . self::$server->log());
        $ran = array_column(Engine::schedules(), null, 'name')['crontask:App\MinuteCronTask'];
        $this->assertSame('done', $ran['last_state']);
        $this->assertLessThan(1.0, $ran['last_run_at'] - $minute, 'started within 1 s of its minute');
        // sake dev/cron in the same minute does not run it again (CronTaskStatus is the shared guard).
        [$code, $out] = self::$site->sake('dev/cron');
        $this->assertSame(0, $code, $out);
        $this->assertStringNotContainsString('App\MinuteCronTask will start now', $out);
        $this->assertCount(1, self::$site->query("SELECT ID FROM AsyncTestRecord WHERE Title = '$title'"));
        $this->assertStringContainsString('crontask:App\MinuteCronTask', self::$site->sake('dev/tasks/async-engine')[1]);
        // A CronTask that no longer has a schedule is unscheduled by the next dev/build.
        self::$site->setEnv('ASYNC_TEST_CRON', '');
        self::$site->devBuild();
        $this->assertArrayNotHasKey('crontask:App\MinuteCronTask', array_column(Engine::schedules(), null, 'name'));
    }

    /**
     * Holds the site database's write lock, as another process writing would,
     * until `$find` returns a non-empty list (tried every `$every` s, for at
     * most 15 s) and `$hold` s more; returns its last list.
     */
    private function holdingTheSiteLock(callable $find, float $every, float $hold = 0): array
    {
        $writer = self::$site->connect();
        $writer->exec('BEGIN IMMEDIATE');
        $deadline = microtime(true) + 15;
        try {
            do {
                usleep((int) ($every * 1e6));
                $found = $find();
            } while (!$found && microtime(true) < $deadline);
            usleep((int) ($hold * 1e6));
        } finally {
            $writer->exec('COMMIT');
        }
        return $found;
    }

    /** Waits (bounded, 10 s) until the QueuedJobs jobs are all Complete; returns their rows by ID. */
    private function waitForJobsComplete(int ...$ids): array
    {
        $in = implode(', ', $ids);
        $deadline = microtime(true) + 10;
        do {
            $jobs = self::$site->query('SELECT ID, JobStatus, StartAfter, JobStarted, SavedJobMessages '
                . "FROM QueuedJobDescriptor WHERE ID IN ($in) ORDER BY ID");
            usleep(50000);
        } while (array_column($jobs, 'JobStatus') !== array_fill(0, count($ids), 'Complete') && microtime(true) < $deadline);
        return $jobs;
    }

    /**
     * A request with this test's cookies, as a browser sends it.
     *
     * @param array<string, string>|null $post form fields to POST
     * @return array{int, string, array<string, string>} status, body, headers (lower-case names)
     */

    private function browse(string $path, ?array $post = null): array
    {
        $jar = self::$site->dir . '/cookies.txt';
        $r = Http::request(self::$server->url($path), body: $post, curl: [CURLOPT_COOKIEJAR => $jar, CURLOPT_COOKIEFILE => $jar]);
        return [$r['status'], $r['body'], $r['headers']];
    }
}
