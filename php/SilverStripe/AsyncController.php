<?php

declare(strict_types=1);

namespace AsyncEngine\SilverStripe;

use AsyncEngine\RequestRejected;
use AsyncEngine\StatusPage;
use SilverStripe\Control\Controller;
use SilverStripe\Control\HTTPRequest;
use SilverStripe\Control\HTTPResponse;
use SilverStripe\Core\Injector\Injector;
use SilverStripe\Security\Permission;
use SilverStripe\Security\Security;
use SilverStripe\Security\SecurityToken;

/**
 * The `_async` route: `_async/run` runs tasks for the engine's signed
 * self-requests, `_async/status` is the engine's status page for
 * administrators, and everything else gets 403.
 */
class AsyncController extends Controller
{
    /** SilverStripe never dispatches an action named "run": map the URL to runTasks(). */
    private static $url_handlers = [
        'run' => 'runTasks',
    ];

    private static $allowed_actions = [
        'runTasks',
        'status',
    ];

    /** The permission code the status page needs. */
    private static $status_permission = 'ADMIN';

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

    /**
     * The live status page (`?format=json` for monitoring), with retry and
     * cancel buttons; administrators only, actions CSRF-checked.
     */
    public function status(HTTPRequest $request): HTTPResponse
    {
        if (!Permission::check($this->config()->get('status_permission'))) {
            return Security::permissionFailure($this, 'The async-engine status page is for administrators.');
        }
        $token = SecurityToken::inst();
        if ($request->isPOST() && !$token->isEnabled()) {
            // No CSRF protection, no state-changing action.
            return HTTPResponse::create("Actions need SilverStripe's SecurityToken, which is disabled.\n", 403)
                ->addHeader('Content-Type', 'text/plain; charset=utf-8');
        }
        if ($request->isPOST() && !$token->checkRequest($request)) {
            return HTTPResponse::create("The form expired or is not from this site: reload the page.\n", 400)
                ->addHeader('Content-Type', 'text/plain; charset=utf-8');
        }
        Async::configureEngine();
        $fields = $token->isEnabled() ? [$token->getName() => $token->getValue()] : [];
        $page = new StatusPage(true, $fields, 'async-engine status');
        [$status, $headers, $body] = $page->handle($request->httpMethod(), $request->getVars(), $request->postVars());
        $response = HTTPResponse::create($body, $status);
        foreach ($headers as $name => $value) {
            $response->addHeader($name, $value);
        }
        return $response;
    }

    private function forbidden(): HTTPResponse
    {
        return HTTPResponse::create("Forbidden\n", 403)
            ->addHeader('Content-Type', 'text/plain; charset=utf-8');
    }
}
