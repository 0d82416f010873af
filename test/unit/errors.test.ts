import { describe, expect, it } from 'vitest';
import { fromStatus, InvalidArgumentError, NotFoundError, Status, toStatus } from '../../libs/errors/index.js';

describe('errors → status', () => {
  it('keeps the code and message of mesh errors', () => {
    expect(toStatus(new InvalidArgumentError('inputs[0].shape', 'wrong'))).toMatchObject({ code: Status.INVALID_ARGUMENT, details: 'inputs[0].shape: wrong' });
    expect(toStatus(new NotFoundError('model x not found'))).toMatchObject({ code: Status.NOT_FOUND });
  });

  it('hides anything else behind INTERNAL', () => {
    const s = toStatus(new Error('ENOENT: /secret/path at foo.js:1'));
    expect(s).toMatchObject({ code: Status.INTERNAL, details: 'internal error' });
  });

  it('rebuilds errors that crossed a hop', () => {
    const e = fromStatus(Status.INVALID_ARGUMENT, 'inputs[1].datatype: bad');
    expect(e).toBeInstanceOf(InvalidArgumentError);
    expect((e as InvalidArgumentError).field).toBe('inputs[1].datatype');
    expect(fromStatus(Status.UNAVAILABLE, 'x').code).toBe(Status.UNAVAILABLE);
    expect(fromStatus(999, 'x').code).toBe(Status.INTERNAL);
  });
});
