<?php

declare(strict_types=1);

namespace AsyncEngine\SilverStripe;

use AsyncEngine\RequestRejected;
use SilverStripe\Control\Controller;
use SilverStripe\Control\HTTPRequest;
use SilverStripe\Control\HTTPResponse;
use SilverStripe\Core\Injector\Injector;

/**
 * The `_async` route: `_async/run` runs tasks for the engine's signed
 * self-requests and answers 403 to everything else.
 */
class AsyncController extends Controller
{
    /** SilverStripe never dispatches an action named "run": map the URL to runTasks(). */
    private static $url_handlers = [
        'run' => 'runTasks',
    ];

    private static $allowed_actions = [
        'runTasks',
    ];

    /** Nothing to see at /_async itself. */
    public function index(): HTTPResponse
    {
        return $this->forbidden();
    }

    /** Runs due tasks for a genuine self-request; 403 for any other request. */
    public function runTasks(HTTPRequest $request): HTTPResponse
    {
        try {
            $ran = Injector::inst()->get(TaskRunner::class)->serve();
        } catch (RequestRejected $e) {
            return $this->forbidden();
        }
        return HTTPResponse::create("ran $ran\n", 200)
            ->addHeader('Content-Type', 'text/plain; charset=utf-8')
            ->addHeader('Cache-Control', 'no-store');
    }

    private function forbidden(): HTTPResponse
    {
        return HTTPResponse::create("Forbidden\n", 403)
            ->addHeader('Content-Type', 'text/plain; charset=utf-8');
    }
}
